"""The text and HTML bodies of a notification sent by email, without I/O.

Every piece of the notification is escaped into the HTML (a subject or a name is data, never
markup). The HTML carries the call to action as a click-through link, the open pixel and an
unsubscribe link; the text part carries the same links written out, since many readers never
show HTML. The links arrive already signed (infra/tracking.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from models.delivery import DeliveryRequest


@dataclass(frozen=True, slots=True)
class MailLinks:
    click: str
    #: None in a transactional mail (a contact verification): no tracking, nothing to leave.
    open_pixel: str = ""
    unsubscribe: str = ""
    #: A link no reader sees (hidden, and named for no one); a scanner that follows it gives
    #: itself away (api/routes/tracking.py).
    trap: str = ""


@dataclass(frozen=True, slots=True)
class MailBody:
    subject: str
    text: str
    html: str


def render_mail(request: DeliveryRequest, links: MailLinks) -> MailBody:
    subject = request.subject or "A note from Elimu Pulse"
    cta = request.cta or "Open Elimu Pulse"
    footer = (
        "--\nYou get this because email is on in your notification settings.\n"
        f"Unsubscribe from these emails: {links.unsubscribe}\n"
        if links.unsubscribe
        else ""
    )
    text = f"{request.body}\n\n{cta}: {links.click}\n\n{footer}"
    # An admin's template gives the HTML (its values were escaped into it when rendered);
    # otherwise it is built from the text.
    paragraphs = request.html or "".join(
        f"<p>{escape(part)}</p>" for part in request.body.split("\n") if part.strip()
    )
    html = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{escape(subject)}</title></head>"
        '<body style="font-family:sans-serif;max-width:560px;margin:auto">'
        f"{paragraphs}"
        f'<p><a href="{escape(links.click, quote=True)}" '
        'style="background:#1d4ed8;color:#fff;padding:10px 16px;border-radius:6px;text-decoration:none">'
        f"{escape(cta)}</a></p>"
        + (
            '<p style="color:#666;font-size:12px">You get this because email is on in your '
            f'notification settings. <a href="{escape(links.unsubscribe, quote=True)}">Unsubscribe</a>.</p>'
            if links.unsubscribe
            else ""
        )
        + (
            f'<img src="{escape(links.open_pixel, quote=True)}" width="1" height="1" alt="">'
            if links.open_pixel
            else ""
        )
        + (
            # Hidden from readers (and from screen readers): only a machine ever follows it.
            f'<a href="{escape(links.trap, quote=True)}" style="display:none" aria-hidden="true" '
            'tabindex="-1"></a>'
            if links.trap
            else ""
        )
        + "</body></html>"
    )
    return MailBody(subject=subject, text=text, html=html)
