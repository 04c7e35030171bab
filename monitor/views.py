"""The staff dashboard page: its first state rendered by the server (useful with the socket
down), then kept live by ``static/js/session_monitor.js`` over ``/ws/monitor/``."""

from __future__ import annotations

from datetime import datetime, timezone

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from monitor import auth, state
from patient_data.decorators import login_required


@login_required
async def dashboard(request: HttpRequest) -> HttpResponse:
    """Sessions holding patient data (user, keyed ref, counts, entry names, countdowns)."""
    user = await request.auser()
    if not await auth.acan_watch(user):
        raise PermissionDenied
    sessions = await state.asessions()
    for row in sessions:
        seen = row["last_activity"]
        row["last_activity_at"] = datetime.fromtimestamp(seen, timezone.utc) if seen else None
    context = {
        "sessions": sessions,
        "can_act": await auth.acan_act(user),
        "can_monitor": True,
        "user": user,
    }
    return render(request, "monitor/dashboard.html", context)
