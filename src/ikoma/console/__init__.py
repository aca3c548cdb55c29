"""The web console: server-rendered pages (Jinja2) of the same app, calling the services directly.

Pages are GET routes in the one policy table (api/policy.py); their mutations go to the existing REST
routes from static/ikoma.js, so the same policy decides and the same audit records. See docs/console.md.
"""

from __future__ import annotations

from fastapi import APIRouter


def routes() -> APIRouter:
    """Every console page, for `create_app` to include (imported here so importing the package is cheap)."""
    from ikoma.console import (
        action_log,
        admin_pages,
        catalog_pages,
        fleet,
        instances,
        machine,
        orders,
        pages,
        run,
    )

    router = APIRouter(include_in_schema=False)
    for part in (pages, fleet, machine, run, orders, action_log, admin_pages, instances, catalog_pages):
        router.include_router(part.router)
    return router
