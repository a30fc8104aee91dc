// The React page's tests call the SDK as `window.Sentry` and render with React.
import * as Sentry from "@sentry/react";
import { createElement } from "react";
import { createRoot } from "react-dom/client";

window.Sentry = Sentry;
window.createElement = createElement;
window.createRoot = createRoot;
