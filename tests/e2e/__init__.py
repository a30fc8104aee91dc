"""End-to-end tests: the official browser SDK in headless Chromium, live server."""
