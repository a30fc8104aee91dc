"""The official ``@sentry/react`` error boundary in headless Chromium, reporting."""

from __future__ import annotations

from playwright.sync_api import Browser

from tests.conftest import LiveServer

# A component that fails while rendering, under the SDK's error boundary.
RENDER = """
(dsn) => {
  window.sent = [];
  Sentry.init({
    dsn,
    release: "portal@2.3.0",
    beforeSend(event) { window.sent.push(event.event_id); return event; },
  });
  function CartTotal() { throw new Error("cart items are missing in <CartTotal>"); }
  const fallback = createElement("p", { id: "fallback" }, "Something went wrong");
  createRoot(document.getElementById("app")).render(
    createElement(Sentry.ErrorBoundary, { fallback }, createElement(CartTotal))
  );
}
"""


def test_error_boundary_reports_the_render_error_with_its_component_stack(
    browser: Browser, page_origin: str, module_server: LiveServer
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{page_origin}/react")
        page.evaluate(RENDER, module_server.dsn)
        page.wait_for_selector("#fallback")
        page.wait_for_function("window.sent.length >= 1", timeout=10_000)
        assert page.evaluate("() => Sentry.flush(5000)")
        event_id = page.evaluate("window.sent[0]")
    finally:
        context.close()

    stored = module_server.wait_event(event_id)
    # The boundary chains a synthetic error carrying the component stack to the one
    # thrown, which stays the primary exception.
    chained, thrown = stored["exception"]["values"]
    assert thrown["value"] == "cart items are missing in <CartTotal>"
    assert thrown["mechanism"]["type"] == "auto.function.react.error_boundary"
    assert chained["type"] == "React ErrorBoundary Error"
    components = [f.get("function") for f in chained["stacktrace"]["frames"]]
    assert components[-2:] == ["ErrorBoundary", "CartTotal"]
    assert stored["contexts"]["react"]["version"].startswith("19.")
    assert stored["sdk"]["name"] == "sentry.javascript.react"
    assert stored["issue_id"] > 0
