// Settings: API keys (GET/POST /v0/keys, POST /v0/keys/{id}/revoke) and the loaded config
// (GET /v0/config, POST /v0/config/reload), all through funnels.api with the session's CSRF token.
"use strict";

(() => {
  const { api, el, on, ready, formatTime, showError, clearError, copy } = window.funnels;
  const $ = (selector) => document.querySelector(selector);
  const ownKeyId = document.body.dataset.keyId;

  // --- keys ----------------------------------------------------------------------------------------------

  function keyRow(key) {
    const own = key.id === ownKeyId;
    const status = key.revoked
      ? el("span", { class: "badge muted", title: `Revoked ${formatTime(key.revoked_at)}` }, "Revoked")
      : el("span", { class: "badge ok" }, "Active");
    const revoke = key.revoked
      ? null
      : el("button", { type: "button", class: "button danger small", dataset: { revoke: key.id } }, "Revoke");
    return el(
      "tr",
      { class: key.revoked ? "revoked" : "", dataset: { keyId: key.id } },
      el("td", {}, key.name || el("span", { class: "muted" }, "unnamed"), own ? el("span", { class: "badge you" }, "you") : null),
      el("td", {}, el("code", {}, key.id)),
      el("td", {}, key.scopes.map((scope) => el("span", { class: "scope" }, scope))),
      el("td", { class: "nowrap" }, formatTime(key.created)),
      el("td", {}, status),
      el("td", { class: "actions" }, revoke),
    );
  }

  async function loadKeys() {
    const { data } = await api("/v0/keys");
    const rows = data.length ? data.map(keyRow) : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No keys yet."))];
    $("#keys-table tbody").replaceChildren(...rows);
  }

  on($("#new-key"), "submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const errors = $("#new-key-error");
    clearError(errors);
    const scopes = [...form.querySelectorAll('input[name="scopes"]:checked')].map((box) => box.value);
    if (!scopes.length) {
      showError(new Error("Choose at least one scope."), errors);
      return;
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const created = await api("/v0/keys", { method: "POST", body: { name: form.elements.name.value, scopes }, errors });
      $("#new-key-value").textContent = created.key;
      $("#new-key-secret").hidden = false;
      form.elements.name.value = "";
      await loadKeys();
    } finally {
      button.disabled = false;
    }
  });

  on($("#copy-key"), "click", async (event) => {
    const button = event.currentTarget;
    button.textContent = (await copy($("#new-key-value").textContent)) ? "Copied" : "Select it and copy";
  });

  on($("#dismiss-key"), "click", () => {
    // The secret leaves the page for good: the server never shows it again.
    $("#new-key-value").textContent = "";
    $("#new-key-secret").hidden = true;
    $("#copy-key").textContent = "Copy";
  });

  on($("#keys-table"), "click", async (event) => {
    const button = event.target.closest("button[data-revoke]");
    if (!button) return;
    const id = button.dataset.revoke;
    const warning =
      id === ownKeyId
        ? `Revoke key ${id}? It is the key you are signed in with: this session ends too.`
        : `Revoke key ${id}? Everything using it stops working at once. This cannot be undone.`;
    if (!window.confirm(warning)) return;
    button.disabled = true;
    await api(`/v0/keys/${encodeURIComponent(id)}/revoke`, { method: "POST" });
    await loadKeys();
  });

  // --- config --------------------------------------------------------------------------------------------

  function renderConfig(config) {
    $("#config-path").replaceChildren(config.path ? el("code", {}, config.path) : el("span", { class: "muted" }, "none: the server was started without --config"));
    $("#config-loaded").textContent = formatTime(config.loaded_at);
    const state = config.path === null
      ? el("span", { class: "badge muted" }, "No config")
      : config.valid
        ? el("span", { class: "badge ok" }, "Valid")
        : el("span", { class: "badge bad" }, `Last reload failed: ${config.errors.length} problem(s)`);
    $("#config-state").replaceChildren(state);
    $("#config-models").replaceChildren(
      ...(config.models.length ? config.models.map((model) => el("span", { class: "scope" }, model)) : [el("span", { class: "muted" }, "none")]),
    );
    const problems = $("#config-problems");
    problems.replaceChildren(...config.errors.map((problem) => el("li", {}, problem)));
    problems.hidden = config.errors.length === 0;
    const rows = config.funnels.map((funnel) =>
      el(
        "tr",
        {},
        el("td", {}, el("code", {}, funnel.id)),
        el("td", {}, funnel.forModels.join(", ")),
        el("td", {}, el("ol", { class: "steps" }, funnel.steps.map((step) => el("li", {}, step.event)))),
        el("td", { class: "num" }, String(funnel.steps.reduce((sum, step) => sum + step.actions.length, 0))),
      ),
    );
    $("#config-funnels tbody").replaceChildren(
      ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No funnels loaded."))]),
    );
    $("#reload-config").disabled = config.path === null;
    $("#config-json").textContent = JSON.stringify(config, null, 2);
  }

  async function loadConfig() {
    renderConfig(await api("/v0/config"));
  }

  on($("#reload-config"), "click", async (event) => {
    const button = event.currentTarget;
    const errors = $("#config-error");
    clearError(errors);
    button.disabled = true; // renderConfig enables it again
    try {
      renderConfig(await api("/v0/config/reload", { method: "POST", errors }));
    } catch (error) {
      await loadConfig(); // a failed reload is recorded: show its problems beside the running config
      throw error;
    }
  });

  ready(() => Promise.all([loadKeys(), loadConfig()]));
})();
