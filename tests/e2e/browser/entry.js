// The page's tests call the SDK as `window.Sentry`, as with Sentry's CDN bundle.
import * as Sentry from "@sentry/browser";

window.Sentry = Sentry;
