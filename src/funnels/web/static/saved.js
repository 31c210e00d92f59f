// Funnels, "Saved funnels": the list (GET /v0/saved_funnels), each a link (/funnels?saved=<id>) that opens
// it: the builder filled with its parameters (GET /v0/saved_funnels/{id}) and run. "Save" keeps the
// builder's funnel under a new name (POST); with one open, "Save changes" replaces it at the version that
// was opened (PUT, so a change made meanwhile by someone else is refused, not overwritten) and "Delete"
// deletes it. While one is open the address bar carries `saved=<id>` with the funnel's parameters, so a
// reload keeps both. Loads before funnels.js and hooks into it (`funnels.pageHooks`, `funnels.page`).
"use strict";

(() => {
  const { api, ApiError, el, on, clearError, formatTime, copy } = window.funnels;
  const hooks = (window.funnels.pageHooks ??= { query: [], url: [], filled: [], rendered: [], started: [] });
  const page = () => window.funnels.page; // funnels.js, which runs after this script
  const $ = (selector) => document.querySelector(selector);
  const errorBox = $("#saved-error");
  const list = $("#saved-list");

  let current = null; // the saved funnel open: {id, name, version}
  let opening = false; // true while this script fills the builder (that does not close the funnel open)

  hooks.url.push(() => (current ? { saved: current.id } : {}));
  // Anything else filling the builder (a configured funnel, back and forward) closes the saved funnel.
  hooks.filled.push(() => {
    if (!opening) select(null);
  });

  const linkOf = (id) => `/funnels?saved=${encodeURIComponent(id)}`;

  /** Show `funnel` (or none) as the one open, and mark it in the list. */
  function select(funnel) {
    current = funnel ? { id: funnel.id, name: funnel.name, version: funnel.version } : null;
    $("#saved-open").hidden = !current;
    if (current) {
      $("#saved-name").textContent = current.name;
      $("#saved-version").textContent = `version ${current.version}`;
      const link = $("#saved-link");
      link.href = linkOf(current.id);
      link.textContent = new URL(linkOf(current.id), location.href).href;
    }
    for (const item of list.querySelectorAll("[data-saved-id]")) {
      if (current && item.dataset.savedId === current.id) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    }
  }

  async function loadList() {
    const answer = await api("/v0/saved_funnels", { errors: false }).catch((error) => {
      list.replaceChildren(el("li", { class: "muted" }, `Could not load them: ${error.message}`));
      return null;
    });
    if (!answer) return;
    if (!answer.data.length) {
      list.replaceChildren(el("li", { class: "muted" }, "None yet: build a funnel, then save it below."));
      return;
    }
    list.replaceChildren(
      ...answer.data.map((funnel) => {
        const link = el(
          "a",
          { class: "configured-item", href: linkOf(funnel.id), dataset: { savedId: funnel.id }, "aria-current": current?.id === funnel.id ? "true" : null },
          el("strong", {}, funnel.name),
          el("span", { class: "muted" }, `version ${funnel.version} · ${formatTime(funnel.updated)}`),
        );
        on(link, "click", async (event) => {
          if (event.ctrlKey || event.metaKey || event.shiftKey || event.button) return; // a new tab: the link
          event.preventDefault();
          await open(funnel.id);
        });
        return el("li", {}, link);
      }),
    );
  }

  /** Open a saved funnel: fill the builder with its parameters and run it. */
  async function open(id, { push = true } = {}) {
    clearError(errorBox);
    const funnel = await api(`/v0/saved_funnels/${encodeURIComponent(id)}`, { errors: errorBox });
    opening = true;
    try {
      page().fillForm(funnel.parameters);
    } finally {
      opening = false;
    }
    select(funnel);
    await page().run({ push });
  }

  /** The address bar with (or without) the open funnel's id, the rest as it is. */
  function keepInUrl() {
    const params = new URLSearchParams(location.search);
    if (current) params.set("saved", current.id);
    else params.delete("saved");
    const search = params.size ? `?${params}` : "";
    if (search !== location.search) history.replaceState(null, "", `${location.pathname}${search}`);
  }

  on($("#save-form"), "submit", async (event) => {
    event.preventDefault();
    clearError(errorBox);
    const name = $("#save-name").value;
    const funnel = await api("/v0/saved_funnels", { method: "POST", body: { name, parameters: page().readQuery() }, errors: errorBox });
    $("#save-name").value = "";
    select(funnel);
    keepInUrl();
    await loadList();
  });

  on($("#saved-update"), "click", async () => {
    clearError(errorBox);
    const body = { name: current.name, parameters: page().readQuery(), version: current.version };
    const funnel = await api(`/v0/saved_funnels/${encodeURIComponent(current.id)}`, { method: "PUT", body, errors: errorBox });
    select(funnel);
    await loadList();
  });

  on($("#saved-delete"), "click", async () => {
    if (!window.confirm(`Delete the saved funnel "${current.name}"? Its links stop working.`)) return;
    clearError(errorBox);
    await api(`/v0/saved_funnels/${encodeURIComponent(current.id)}`, { method: "DELETE", errors: errorBox });
    select(null);
    keepInUrl();
    await loadList();
  });

  on($("#saved-copy"), "click", async () => {
    const button = $("#saved-copy");
    button.textContent = (await copy($("#saved-link").href)) ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.textContent = "Copy link";
    }, 1500);
  });

  /** `?saved=<id>` alone opens the saved funnel as saved now; with the funnel's parameters (a reload, a link
   * copied from the address bar) those ran already, and it is only marked as the one open. */
  async function follow(params, { push }) {
    if (!params.saved) return;
    if (!params.steps) {
      await open(params.saved, { push });
      return;
    }
    const funnel = await api(`/v0/saved_funnels/${encodeURIComponent(params.saved)}`, { errors: errorBox }).catch(() => null);
    if (funnel) {
      select(funnel);
      keepInUrl(); // the run that started with the page may have left it out
    }
  }

  on(window, "popstate", async () => {
    await follow(Object.fromEntries(new URLSearchParams(location.search)), { push: false });
  });

  // Once funnels.js has started (filled the builder from the address bar, and run it if it holds a funnel).
  hooks.started.push((params) => {
    Promise.all([loadList(), follow(params, { push: false })]).catch((error) => {
      if (!(error instanceof ApiError)) throw error; // an ApiError is shown already
    });
  });
})();
