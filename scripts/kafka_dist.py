"""The Apache Kafka distribution the embedded broker runs: a Java runtime and the official jars.

The jars are the ones `scripts/kafka/pom.xml` pins, resolved from Maven Central by `mvn
dependency:copy-dependencies` once and kept in a cache shared by every data dir and test run
(`ELIMU_CACHE_DIR`, default `~/.cache/elimu`). The cache entry is named after the pom's hash, so
changing the pinned version resolves again, and it appears whole or not at all (resolved into a
temporary directory, then renamed), so an interrupted download is never mistaken for a cache.

`choose_broker` is where `elimu up` and the tests decide between Apache Kafka and Tansu, with a
reason a person can read.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BrokerKind = Literal["kafka", "tansu"]
BROKER_KINDS: tuple[BrokerKind, ...] = ("kafka", "tansu")
MIN_JAVA = 17
POM = Path(__file__).parent / "kafka" / "pom.xml"
#: Generous: the first resolution downloads ~55 MB from Maven Central.
RESOLVE_TIMEOUT_S = 900


class DistributionUnavailable(RuntimeError):
    """Java or the jars cannot be had here; the message says why (printed by `elimu up`)."""


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:  # the pom is ours: a missing version is a bug in the repository
        raise DistributionUnavailable(f"{POM} does not pin <kafka.version>")
    return match.group(1)


def java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_major(java: str) -> int | None:
    """The runtime's major version (17 for "17.0.15"), None if it cannot be run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_…".
    return int(match.group(2) or 0) if major == 1 else major


def cache_dir() -> Path:
    root = os.environ.get("ELIMU_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "elimu"
    )
    return Path(root)


def _libs_dir() -> Path:
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return cache_dir() / f"kafka-{kafka_version()}-{digest}" / "libs"


@dataclass(frozen=True)
class Distribution:
    java: str
    libs: Path
    version: str

    @property
    def classpath(self) -> str:
        return f"{self.libs}/*"

    def command(self, main_class: str, *args: str, heap: str = "256m") -> list[str]:
        """A JVM running one of the distribution's main classes."""
        return [
            self.java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={POM.parent / 'log4j2.properties'}",
            "-cp",
            self.classpath,
            main_class,
            *args,
        ]


#: The distribution's shell tools (bin/*.sh in the Apache Kafka tarball) and the class each runs,
#: so that deploy/kafka/start.sh and setup.sh run here as they run in the compose image.
TOOLS = {
    "kafka-server-start.sh": "kafka.Kafka",
    "kafka-storage.sh": "kafka.tools.StorageTool",
    "kafka-configs.sh": "kafka.admin.ConfigCommand",
    "kafka-acls.sh": "org.apache.kafka.tools.AclCommand",
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups.sh": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
}


def write_tools(dist: Distribution) -> Path:
    """``<cache>/.../home`` with ``bin/<tool>.sh`` wrappers: a ``KAFKA_HOME`` for the deploy
    scripts. ``KAFKA_HEAP_OPTS`` sets the server's heap, as in the tarball's scripts."""
    home = dist.libs.parent / "home"
    (home / "bin").mkdir(parents=True, exist_ok=True)
    log4j = POM.parent / "log4j2.properties"
    for tool, main_class in TOOLS.items():
        heap = "${KAFKA_HEAP_OPTS:--Xmx512m}" if tool == "kafka-server-start.sh" else "-Xmx256m"
        script = (
            "#!/bin/sh\n"
            f"exec {dist.java} {heap} -Dlog4j2.configurationFile={log4j} "
            f'-cp "{dist.classpath}" {main_class} "$@"\n'
        )
        path = home / "bin" / tool
        if not path.exists() or path.read_text() != script:
            path.write_text(script)
            path.chmod(0o755)
    return home


def resolve_jars(libs: Path, log: Path | None = None) -> None:
    """`mvn dependency:copy-dependencies` into ``libs``, atomically."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DistributionUnavailable("Maven (mvn) is not installed, so the Kafka jars cannot be resolved")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=libs.parent))
    try:
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(done.stdout + done.stderr)
        if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise DistributionUnavailable("Maven could not resolve the Kafka jars: " + " | ".join(tail))
        try:
            staging.rename(libs)
        except OSError:
            if not libs.exists():  # not a concurrent resolver's win: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def distribution(resolve: bool = True) -> Distribution:
    """Java 17+ and the pinned jars (resolved into the cache now if ``resolve``)."""
    java = java_binary()
    if java is None:
        raise DistributionUnavailable("no Java runtime (java) on PATH or in JAVA_HOME")
    major = java_major(java)
    if major is None or major < MIN_JAVA:
        raise DistributionUnavailable(f"{java} is Java {major}, Apache Kafka 4 needs {MIN_JAVA}+")
    libs = _libs_dir()
    if not libs.is_dir():
        if not resolve:
            raise DistributionUnavailable(f"the Kafka jars are not in the cache ({libs})")
        resolve_jars(libs, log=libs.parent / "resolve.log")
    return Distribution(java=java, libs=libs, version=kafka_version())


def choose_broker(requested: BrokerKind | None) -> tuple[BrokerKind, str]:
    """Which embedded broker to start, and why. Apache Kafka wherever it can run; Tansu when
    asked for, or when Java 17+ or the jars are missing (the reason says which)."""
    if requested == "tansu":
        return "tansu", "asked for with --broker tansu (memory-only: a restart loses every topic)"
    try:
        dist = distribution()
    except DistributionUnavailable as exc:
        if requested == "kafka":
            raise
        return "tansu", f"Apache Kafka cannot run here ({exc}); Tansu is memory-only"
    why = "asked for with --broker kafka" if requested == "kafka" else f"Java is present ({dist.java})"
    return "kafka", f"Apache Kafka {dist.version}: {why}; data is durable"


def main() -> int:
    """`python -m scripts.kafka_dist`: resolve the jars now and say where they are."""
    try:
        dist = distribution()
    except DistributionUnavailable as exc:
        print(f"kafka_dist: {exc}")
        return 1
    print(f"Apache Kafka {dist.version} jars in {dist.libs} (Java: {dist.java})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
