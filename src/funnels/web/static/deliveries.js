// Deliveries: the action log (GET /v0/actions with status/funnel/model/id filters, page by page), each job's
// rendered payload and attempts in a detail row, Retry for dead and failed jobs and Send again for unknown ones
// (at-most-once sends cut off by a crash; POST /v0/actions/{id}/retry). The filters live in the URL (`?status=dead&funnel=…`; `?job=N` opens one job).
"use strict";

(() => {
  const { api, el, on, ready, formatTime, clearError } = window.funnels;
  const $ = (selector) => document.querySelector(selector);
  const form = $("#delivery-filters");
  const tbody = $("#deliveries-table tbody");
  const FILTERS = ["status", "funnel", "model", "id"];
  const SIZE = 25;
  const STATUS_BADGE = { sent: "ok", dead: "bad", failed: "warn", scheduled: "info", sending: "info", cancelled: "muted", held_out: "muted", capped: "muted", suppressed: "muted", unknown: "warn" };
  const RETRYABLE = new Set(["dead", "failed", "unknown"]);
  // An unknown job may have reached its receiver: sending it again is a decision, worded as one.
  const retryLabel = (status) => (status === "unknown" ? "Send again" : "Retry now");
  let state = { filters: {}, page: 0, total: 0, shown: 0 };

  const personHref = (model, id) => `/people?${new URLSearchParams({ model, id })}`;
  const statusBadge = (status) => el("span", { class: `badge ${STATUS_BADGE[status] ?? "muted"}`, dataset: { status } }, status);

  function whenCell(job) {
    if (job.sent_at) return [el("span", { class: "muted" }, "sent "), formatTime(job.sent_at)];
    if (job.status === "scheduled" || job.status === "failed") {
      return [el("span", { class: "muted" }, job.status === "failed" ? "next try " : "due "), formatTime(job.next_attempt_at ?? job.due_at)];
    }
    return [el("span", { class: "muted" }, "due "), formatTime(job.due_at)];
  }

  function jobRow(job) {
    return el(
      "tr",
      { class: "job", dataset: { jobId: job.id, status: job.status } },
      el("td", {}, el("code", {}, `#${job.id}`)),
      el("td", { class: "status-cell" }, statusBadge(job.status)),
      el("td", {}, el("code", {}, job.funnel), el("span", { class: "muted" }, ` · ${job.step} `), el("span", { class: "step-event" }, job.event)),
      el("td", {}, el("span", { class: "action-type" }, job.type), el("span", { class: "muted" }, ` #${job.action}`)),
      el("td", {}, el("a", { href: personHref(job.instance.model, job.instance.id), class: "instance-link" }, job.instance.id), el("span", { class: "muted small" }, ` ${job.instance.model}`)),
      el("td", { class: "nowrap" }, whenCell(job)),
      el("td", { class: "num attempts" }, String(job.attempts)),
      el("td", { class: "actions" }, el("button", { type: "button", class: "button ghost small", dataset: { toggle: job.id }, "aria-expanded": "false" }, "Details")),
    );
  }

  function attemptsTable(job) {
    const never = { cancelled: "Never attempted: cancelled before it was due.", held_out: "Never sent: the instance is in the action's holdout.", capped: "Never sent: over a frequency cap (the last error says which).", suppressed: "Never sent: the recipient unsubscribed (the last error says from what)." };
    if (!job.attempt_log.length) return el("p", { class: "muted" }, never[job.status] ?? "No attempts yet.");
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "table attempts-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "At"), el("th", {}, "Outcome"), el("th", {}, "Status code"), el("th", {}, "Error / response"))),
        el(
          "tbody",
          {},
          job.attempt_log.map((attempt) =>
            el(
              "tr",
              { dataset: { attempt: attempt.attempt } },
              el("td", {}, String(attempt.attempt)),
              el("td", { class: "nowrap" }, formatTime(attempt.at)),
              el("td", {}, statusBadge(attempt.outcome)),
              el("td", { class: "status-code" }, attempt.status_code === null ? el("span", { class: "muted" }, "–") : el("code", {}, String(attempt.status_code))),
              el("td", {}, attempt.error ? el("span", { class: "error-text" }, attempt.error) : el("code", { class: "response" }, attempt.response ?? "")),
            ),
          ),
        ),
      ),
    );
  }

  /** The rendered args as shown: a body that went out as JSON text is shown as the JSON it is (it is stored
   * as the text sent, which JSON.stringify would show again as one long quoted string). */
  function payload(rendered) {
    let shown = rendered;
    if (typeof rendered?.body === "string") {
      try {
        const body = JSON.parse(rendered.body);
        if (body !== null && typeof body === "object") shown = { ...rendered, body };
      } catch {
        // not JSON: the text as it is
      }
    }
    return el("pre", { class: "payload", dataset: { bodyParsed: String(shown !== rendered) } }, JSON.stringify(shown, null, 2));
  }

  function detailRow(job) {
    const retry = RETRYABLE.has(job.status) ? el("button", { type: "button", class: "button primary small", dataset: { retry: job.id } }, retryLabel(job.status)) : null;
    const facts = [
      ["Due", formatTime(job.due_at)],
      ["Next attempt", formatTime(job.next_attempt_at)],
      ["Sent", formatTime(job.sent_at)],
      ["Created", formatTime(job.created_at)],
      ["Idempotency key", el("code", {}, job.idempotency_key)],
      ["Event", el("code", {}, job.event_id)],
    ];
    return el(
      "tr",
      { class: "detail", dataset: { detailFor: job.id } },
      el(
        "td",
        { colspan: 8 },
        el(
          "div",
          { class: "detail-body" },
          el(
            "div",
            { class: "detail-head" },
            el("dl", { class: "mini-facts" }, facts.map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value)))),
            retry,
          ),
          job.last_error ? el("div", { class: "alert error last-error" }, el("strong", {}, "Last error: "), job.last_error) : null,
          el("div", { class: "alert error retry-error", role: "alert", hidden: true }),
          el("div", { class: "detail-grid" },
            el("div", {}, el("h3", {}, "Rendered payload"), job.rendered ? payload(job.rendered) : el("p", { class: "muted" }, "Not rendered yet: it is rendered when it is sent.")),
            el("div", {}, el("h3", {}, `Attempts (${job.attempt_log.length})`), attemptsTable(job)),
          ),
        ),
      ),
    );
  }

  function addJobs(jobs) {
    for (const job of jobs) {
      const detail = detailRow(job);
      detail.hidden = true;
      tbody.append(jobRow(job), detail);
    }
  }

  function replaceJob(job, open) {
    const row = tbody.querySelector(`tr.job[data-job-id="${job.id}"]`);
    const detail = tbody.querySelector(`tr.detail[data-detail-for="${job.id}"]`);
    if (!row || !detail) return;
    const newRow = jobRow(job);
    const newDetail = detailRow(job);
    newDetail.hidden = !open;
    newRow.querySelector("[data-toggle]").setAttribute("aria-expanded", String(open));
    row.replaceWith(newRow);
    detail.replaceWith(newDetail);
  }

  function summary() {
    const active = FILTERS.filter((name) => state.filters[name]).map((name) => `${name} ${state.filters[name]}`);
    const text = state.total === 0 ? "No deliveries" : `${state.shown} of ${state.total} ${state.total === 1 ? "delivery" : "deliveries"}`;
    $("#deliveries-summary").textContent = active.length ? `${text} · ${active.join(", ")}` : `${text}, newest first`;
  }

  // Bumped by each `apply`: an answer to an earlier one (filters submitted while the first page was still
  // loading, say) is dropped instead of being mixed into the newer one's rows.
  let generation = 0;

  async function loadPage() {
    const asked = generation;
    const query = { page: state.page + 1, size: SIZE };
    for (const name of FILTERS) if (state.filters[name]) query[name] = state.filters[name];
    const body = await api("/v0/actions", { query });
    if (asked !== generation) return;
    if (state.page === 0) tbody.replaceChildren();
    state.page += 1;
    state.total = body.total;
    state.shown += body.data.length;
    addJobs(body.data);
    if (!tbody.children.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 8, class: "muted" }, "No deliveries match these filters.")));
    $("#deliveries-more").hidden = !body.has_more;
    summary();
  }

  async function loadJob(jobId) {
    const asked = generation;
    const job = await api(`/v0/actions/${encodeURIComponent(jobId)}`);
    if (asked !== generation) return;
    tbody.replaceChildren();
    addJobs([job]);
    replaceJob(job, true);
    $("#deliveries-more").hidden = true;
    $("#deliveries-summary").replaceChildren(`Job #${job.id} · `, el("a", { href: "/deliveries" }, "show all deliveries"));
  }

  function readUrl() {
    const params = new URLSearchParams(location.search);
    return Object.fromEntries(FILTERS.map((name) => [name, params.get(name) ?? ""]));
  }

  async function apply(filters) {
    clearError();
    generation += 1;
    state = { filters, page: 0, total: 0, shown: 0 };
    for (const name of FILTERS) form.elements[name].value = filters[name];
    const job = new URLSearchParams(location.search).get("job");
    if (job) await loadJob(job);
    else await loadPage();
  }

  on(form, "submit", async (event) => {
    event.preventDefault();
    const filters = Object.fromEntries(FILTERS.map((name) => [name, form.elements[name].value.trim()]));
    const query = new URLSearchParams(Object.entries(filters).filter(([, value]) => value));
    history.pushState(null, "", `/deliveries${query.size ? `?${query}` : ""}`);
    await apply(filters);
  });

  on($("#clear-filters"), "click", async () => {
    history.pushState(null, "", "/deliveries");
    await apply(readUrl());
  });

  on(window, "popstate", () => apply(readUrl()));

  on($("#deliveries-more"), "click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      await loadPage();
    } finally {
      button.disabled = false;
    }
  });

  async function retry(button) {
    const id = button.dataset.retry;
    const label = button.textContent;
    const detail = button.closest("tr.detail");
    const errors = detail.querySelector(".retry-error");
    button.disabled = true;
    button.textContent = "Retrying…";
    let job;
    try {
      job = await api(`/v0/actions/${encodeURIComponent(id)}/retry`, { method: "POST", errors });
    } catch (error) {
      button.disabled = false;
      button.textContent = label;
      throw error;
    }
    replaceJob(job, true);
    // The worker sends it within moments: follow it until it leaves scheduled/sending (a minute at most).
    for (let tries = 0; tries < 30 && ["scheduled", "sending"].includes(job.status); tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      job = await api(`/v0/actions/${encodeURIComponent(id)}`);
      const open = !tbody.querySelector(`tr.detail[data-detail-for="${id}"]`)?.hidden;
      replaceJob(job, open);
    }
  }

  on(tbody, "click", async (event) => {
    const retryButton = event.target.closest("button[data-retry]");
    if (retryButton) {
      await retry(retryButton);
      return;
    }
    if (event.target.closest("a, pre, .detail")) return;
    const row = event.target.closest("tr.job");
    if (!row) return;
    const detail = tbody.querySelector(`tr.detail[data-detail-for="${row.dataset.jobId}"]`);
    detail.hidden = !detail.hidden;
    row.classList.toggle("open", !detail.hidden);
    row.querySelector("[data-toggle]").setAttribute("aria-expanded", String(!detail.hidden));
  });

  ready(async () => {
    const config = await api("/v0/config");
    const wanted = readUrl();
    const funnels = config.funnels.map((funnel) => funnel.id);
    const models = [...config.models];
    if (wanted.funnel && !funnels.includes(wanted.funnel)) funnels.push(wanted.funnel);
    if (wanted.model && !models.includes(wanted.model)) models.push(wanted.model);
    form.elements.funnel.append(...funnels.map((id) => el("option", { value: id }, id)));
    form.elements.model.append(...models.map((model) => el("option", { value: model }, model)));
    await apply(wanted);
  });
})();
