"""HTTP routers, one module per resource. ``ROUTERS`` is what ``create_app`` mounts, so a new
resource is one new module plus one line here."""

from __future__ import annotations

from fastapi import APIRouter

from api import dashboard
from api.routes import (
    achievements,
    careers,
    contact,
    events,
    goals,
    health,
    interventions,
    leaderboards,
    notifications,
    ops,
    outreach,
    privacy,
    profile,
    push,
    recommendations,
    referrals,
    rewards,
    risk,
    templates,
    tracking,
    users,
    webhooks,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    events.router,
    users.router,
    achievements.router,
    leaderboards.router,
    careers.router,
    recommendations.router,
    referrals.router,
    rewards.router,
    goals.router,
    ops.router,
    outreach.router,
    contact.router,
    risk.router,
    notifications.router,
    profile.router,
    privacy.router,
    push.router,
    tracking.router,
    webhooks.router,
    interventions.router,
    templates.router,
    dashboard.router,
)
