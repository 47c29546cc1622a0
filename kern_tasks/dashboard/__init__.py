"""The dashboard: server-rendered pages (Jinja2, a little plain JavaScript, no build step)
served by the AgentOS at /dashboard, behind the API's own auth.

    AgentOS(...).get_app()   # mounts app.dashboard_app(agent_os) at /dashboard

Modules: app.py builds the mounted app (its pages, static files, errors as HTML pages);
session.py is the login ("log in with a key": the security key or a user's JWT, kept in
an HttpOnly SameSite=Strict cookie that os/auth.py accepts on /dashboard only), logout and
CSRF; render.py the templates, their filters and the page frame; reads.py the reads the
pages make (through ScheduleManager and RunQueries, scoped by the caller; never SQL in a
route); links.py the URLs pages link each other by; schedules.py and actions.py the
schedules pages and their actions; runs.py the runs page and a workflow run's page (its
step tree, polled while in flight), agent_runs.py an agent's or a team's run (its input,
output, tool calls; polled while in flight, static/run_poll.js as the workflow's),
health.py the health page, charts.py its SVG charts; templates/ and static/ the HTML, CSS
and JS.

Adding a page (the recipe every page follows):
1. a module here with `router = APIRouter()` and its routes, e.g.
       @router.get("/runs", response_class=HTMLResponse)
       async def runs_page(request: Request) -> HTMLResponse:
           found = await reads_of(request).recent_runs(...)      # reads.py, scoped already
           return page(request, "runs.html", "runs", runs=found)  # render.py
   paths are relative to /dashboard; query values are typed parameters (FastAPI answers a
   bad one 422 as an HTML page naming the field); a core error (NotFound, Conflict,
   ValidationError) raised in a route becomes an HTML page with the core's message and
   its status (app.py), never a 500;
2. its template in templates/, `{% extends "base.html" %}` filling `{% block content %}`
   (`title`, the nav entry it lights up as `nav`, `csrf` for forms are in the context);
3. its router in app.py's PAGES, its nav entry in render.py's NAV (if it has one), its
   URL builder in links.py when other pages link to it;
4. its scopes in os/scopes.py's ROUTE_SCOPES ("GET /dashboard/runs*": the scopes of the
   data it shows; POSTs: those of the API route doing the same), or only admin reaches it;
5. a POST form carries `<input type="hidden" name="csrf" value="{{ csrf }}">` and its
   route starts with `await checked_form(request)` (session.py: CSRF, same origin);
   fetch() POSTs send the token as the X-CSRF-Token header;
6. HTTP tests in tests/test_dashboard_<page>.py, a browser test with a screenshot.
"""
