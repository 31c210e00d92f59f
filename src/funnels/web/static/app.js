// The dashboard's shared helpers, loaded (deferred) by base.html before each page's own script.
// Pages get their data from the JSON API with `funnels.api`, build DOM with `funnels.el` (text is never
// parsed as HTML), and attach handlers with `funnels.on`, which shows failures instead of losing them.
"use strict";

window.funnels = (() => {
  const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

  /** A non-2xx answer of the JSON API: the envelope's `error` ({code, message, doc_url, param?, details?}). */
  class ApiError extends Error {
    constructor(status, error) {
      super(error.message);
      this.name = "ApiError";
      this.status = status;
      this.code = error.code;
      this.details = error.details ?? null;
      this.docUrl = error.doc_url ?? null;
    }
  }

  /** `document.createElement` with properties and children; strings become text nodes. */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name in node && typeof value !== "string") node[name] = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const flash = () => document.querySelector("[data-flash]");

  /** Show an error (an ApiError with its details, or any Error) in `target`, else the page's alert. */
  function showError(error, target = flash()) {
    if (!target) return;
    const details = error instanceof ApiError && error.details ? Object.entries(error.details) : [];
    const parts = [el("strong", {}, error.message || String(error))];
    if (details.length) {
      parts.push(el("ul", {}, details.map(([field, problem]) => el("li", {}, el("code", {}, field), " ", problem))));
    }
    if (error instanceof ApiError && error.docUrl) {
      parts.push(el("a", { href: error.docUrl, class: "doc-link" }, error.code));
    }
    target.replaceChildren(...parts);
    target.hidden = false;
  }

  function clearError(target = flash()) {
    if (target) {
      target.hidden = true;
      target.replaceChildren();
    }
  }

  /**
   * Call the JSON API as the signed-in session: `await funnels.api("/v0/keys", {method: "POST", body: {...}})`.
   * Sends the CSRF token on every unsafe method. Returns the parsed body; on a non-2xx answer shows the
   * envelope's message in `errors` (an element; default the page's alert; `false` for none) and throws
   * ApiError. A 401 (the session ended) goes to the sign-in form, which comes back here.
   */
  async function api(path, { method = "GET", body, query, errors } = {}) {
    const headers = { Accept: "application/json" };
    if (!["GET", "HEAD"].includes(method)) headers["X-CSRF-Token"] = csrfToken;
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const url = query ? `${path}?${new URLSearchParams(query)}` : path;
    let response;
    try {
      response = await fetch(url, init);
    } catch (cause) {
      const error = new ApiError(0, { code: "NETWORK", message: `The server did not answer (${cause.message}).` });
      if (errors !== false) showError(error, errors ?? flash());
      throw error;
    }
    const data = await response.json().catch(() => null);
    if (response.ok) return data;
    const error = new ApiError(response.status, data?.error ?? { code: `HTTP_${response.status}`, message: response.statusText });
    if (response.status === 401) {
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    } else if (errors !== false) {
      showError(error, errors ?? flash());
    }
    throw error;
  }

  /** `fn` as an async function whose failures are not lost: an ApiError was already shown; anything else is
   * shown in the page's alert and rethrown (an uncaught error, for the console and the tests). */
  function guarded(fn) {
    return async (...args) => {
      try {
        await fn(...args);
      } catch (error) {
        if (!(error instanceof ApiError)) {
          showError(error);
          throw error;
        }
      }
    };
  }

  /** addEventListener for an async handler, guarded. */
  function on(target, event, handler) {
    target.addEventListener(event, guarded(handler));
  }

  /** Run a page's async start-up code, guarded, once the document is parsed. */
  function ready(start) {
    const run = guarded(start);
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
    else run();
  }

  /** A Chart.js chart on `canvas`, or null with a note in its place when Chart.js is not installed. */
  function chart(canvas, config) {
    if (typeof window.Chart !== "function") {
      canvas.replaceWith(el("p", { class: "alert note" }, "Charts are unavailable: Chart.js is not installed (run make install)."));
      return null;
    }
    return new window.Chart(canvas, config);
  }

  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  /** An ISO time from the API as a local date and time ("–" for none). */
  function formatTime(iso) {
    return iso ? dateTime.format(new Date(iso)) : "–";
  }

  /** Seconds as a short duration: 42 s, 12 min, 3.5 h, 2.1 d ("–" for none). */
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${(seconds / 60).toFixed(seconds < 600 ? 1 : 0)} min`;
    if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  /** Copy text to the clipboard; true if it worked (the Clipboard API, else a selection and the copy command). */
  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch {
        // not allowed here (a browser setting, a missing user gesture): try the older way
      }
    }
    const area = el("textarea", { readonly: true, class: "offscreen" }, text);
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    return copied;
  }

  return { api, ApiError, el, on, ready, showError, clearError, chart, formatTime, duration, copy, csrfToken };
})();
