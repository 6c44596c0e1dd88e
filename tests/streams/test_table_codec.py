"""The state table's changelog encoding: what recovery reads back must be what was written."""

from __future__ import annotations

import faust

from models.gamification import UserState
from streams.app import CODECS
from streams.engine import USER_STATE
from streams.tables import RawKey, register_codecs

USER_STATE_CODEC, UserStateValue = CODECS[USER_STATE.codec]


def test_table_uses_raw_keys_and_the_state_codec() -> None:
    register_codecs(*(codec for codec, _ in CODECS.values()))  # as the worker does when it builds its app
    app = faust.App("codec-test", broker="memory://", store="memory://")
    table = app.Table("t", key_type=RawKey, value_type=UserStateValue, use_partitioner=True)
    assert table.key_serializer == "raw"
    assert table.value_serializer == USER_STATE.codec

    state = UserState(user_id="u-1")
    state.xp = 420
    raw_value = app.serializers.dumps_value(table.value_type, state, serializer=table.value_serializer)
    raw_key = app.serializers.dumps_key(table.key_type, "u-1", serializer=table.key_serializer)
    assert raw_key == b"u-1"  # byte-identical to the input topics' key, so partitioning agrees

    back = app.serializers.loads_value(table.value_type, raw_value, serializer=table.value_serializer)
    assert isinstance(back, UserState)
    assert back.to_dict() == state.to_dict()
    assert app.serializers.loads_key(table.key_type, raw_key, serializer=table.key_serializer) == "u-1"
    assert USER_STATE_CODEC.loads(USER_STATE_CODEC.dumps(state)).xp == 420
