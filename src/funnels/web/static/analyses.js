// Funnels page, below the funnel: its conversion over time (GET /v0/funnel/trends), its time to convert
// (GET /v0/funnel/time_to_convert) and the people behind a bar, a row or a drop-off (GET /v0/funnel/people,
// paginated, with a CSV download). Loads before funnels.js and hooks into it (`funnels.pageHooks.rendered`:
// each funnel it shows, with the /v0/funnel query it ran, or none); everything here follows from that.
// Trends and time to convert are for all of the funnel's users (its breakdown is left out: one line, one
// histogram); the people list keeps the breakdown when a breakdown's bar or row was chosen.
"use strict";

(() => {
  const { api, ApiError, el, on, showError, clearError, duration, formatTime } = window.funnels;
  const $ = (selector, root = document) => root.querySelector(selector);

  const integer = new Intl.NumberFormat();
  const count = (n) => integer.format(n);
  const percent = (ratio) => (ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(1)}%`);
  const stepLabel = (name) => name.replace(/::\d+$/, "");
  const PEOPLE_PAGE = 50;
  const DAY_MS = 86400000;

  let current = null; // {query, steps}: the funnel shown
  let trendsChart = null;
  let ttcChart = null;
  // Each panel's latest request: an older answer that comes in later is dropped.
  const latest = { trends: 0, ttc: 0, people: 0 };
  let people = null; // {params, next_cursor}

  /** The funnel's own parameters (not the page's others, such as `compare`). */
  function funnelOnly(query) {
    const { compare, ...rest } = query;
    return rest;
  }

  /** The funnel's query without its breakdown (trends and time to convert are for all its users). */
  function overall(query) {
    // Trends, time to convert and people count every user: the funnel's sample (sampling.js) is its own.
    const { breakdown, breakdown_top_n, breakdown_attribution, sample, ...rest } = query;
    return rest;
  }

  /** What the funnel counts: "Users", or a model's instances with `aggregate_by` (groups.js). */
  const counted = () => window.funnels.counted(current?.query);

  /** A period that suits the date range: days up to a month, weeks up to half a year, else months. */
  function autoInterval(query) {
    const days = (Date.parse(query.date_to) - Date.parse(query.date_from)) / DAY_MS + 1;
    return days <= 31 ? "day" : days <= 190 ? "week" : "month";
  }

  function setState(card, state, text = "") {
    card.dataset.state = state; // loading | ready | empty | error (for tests and styles)
    const note = $(".analysis-note", card);
    note.textContent = text;
    note.hidden = !text;
  }

  function destroy(chart) {
    if (chart) chart.destroy();
    return null;
  }

  // --- conversion over time -----------------------------------------------------------------------------

  async function loadTrends() {
    const card = $("#trends-card");
    const asked = ++latest.trends;
    const chosen = $("#trends-interval").value;
    const interval = chosen === "auto" ? autoInterval(current.query) : chosen;
    setState(card, "loading", "Loading…");
    clearError($("#trends-error"));
    let answer;
    try {
      answer = await api("/v0/funnel/trends", { query: { ...overall(current.query), interval }, errors: false });
    } catch (error) {
      if (asked !== latest.trends) return;
      setState(card, "error");
      trendsChart = destroy(trendsChart);
      showError(error, $("#trends-error"));
      throw error;
    }
    if (asked !== latest.trends) return;
    renderTrends(card, answer);
  }

  function renderTrends(card, answer) {
    const rows = answer.data;
    card.dataset.interval = answer.interval;
    card.dataset.rows = JSON.stringify(rows.map((row) => [row.period, row.entered, row.converted, row.window_closed]));
    const table = $("#trends-table");
    table.tBodies[0].replaceChildren(
      ...rows.map((row) =>
        el(
          "tr",
          { dataset: { period: row.period, entered: row.entered, converted: row.converted, open: String(!row.window_closed) } },
          el("td", {}, row.date_from === row.date_to ? row.period : `${row.date_from} – ${row.date_to}`),
          el("td", { class: "num" }, count(row.entered)),
          el("td", { class: "num" }, count(row.converted)),
          el("td", { class: "num" }, percent(row.conversion)),
          el("td", {}, row.window_closed ? "" : el("span", { class: "badge info", title: "Its window has not closed: its users may still convert" }, "still open")),
        ),
      ),
    );
    trendsChart = destroy(trendsChart);
    if (!rows.some((row) => row.entered)) {
      setState(card, "empty", "Nobody entered this funnel in these dates.");
      return;
    }
    setState(card, "ready", rows.some((row) => !row.window_closed) ? "Dashed, hollow: periods whose window is still open (their users may still convert)." : "");
    const open = rows.map((row) => !row.window_closed);
    const canvas = $("#trends-chart");
    trendsChart = window.funnels.chart(canvas, {
      type: "line",
      data: {
        labels: rows.map((row) => row.period),
        datasets: [
          {
            label: "Conversion",
            data: rows.map((row) => (row.conversion === null ? null : row.conversion * 100)),
            rows,
            borderColor: "#3b5bdb",
            backgroundColor: "#3b5bdb",
            pointRadius: rows.length > 60 ? 0 : 3,
            spanGaps: true,
            pointBackgroundColor: open.map((isOpen) => (isOpen ? "#ffffff" : "#3b5bdb")),
            segment: {
              borderDash: (part) => (open[part.p1DataIndex] ? [4, 3] : undefined),
              borderColor: (part) => (open[part.p1DataIndex] ? "#91a7ff" : undefined),
            },
          },
        ],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: {
          y: { beginAtZero: true, ticks: { callback: (value) => `${value}%` }, grid: { color: "#eef0f4" } },
          x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 6 } },
        },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label(item) {
                const row = item.dataset.rows[item.dataIndex];
                return `${percent(row.conversion)}: ${count(row.converted)} of ${count(row.entered)}${row.window_closed ? "" : " (still open)"}`;
              },
            },
          },
        },
      },
    });
  }

  // --- time to convert ------------------------------------------------------------------------------------

  /** The from/to selects list the funnel's steps; kept when the funnel has as many steps, else 1 → last. */
  function fillStepSelects() {
    const steps = current.steps;
    for (const [id, fallback] of [["#ttc-from", 1], ["#ttc-to", steps.length]]) {
      const select = $(id);
      const kept = Number(select.value);
      select.replaceChildren(...steps.map((step, index) => el("option", { value: String(index + 1) }, `${index + 1}. ${stepLabel(step.name)}`)));
      select.value = String(kept >= 1 && kept <= steps.length && select.dataset.steps === String(steps.length) ? kept : fallback);
      select.dataset.steps = String(steps.length);
    }
  }

  async function loadTimeToConvert() {
    const card = $("#ttc-card");
    const fromStep = Number($("#ttc-from").value);
    const toStep = Number($("#ttc-to").value);
    const asked = ++latest.ttc;
    clearError($("#ttc-error"));
    if (fromStep >= toStep) {
      ttcChart = destroy(ttcChart);
      $("#ttc-facts").replaceChildren();
      setState(card, "empty", "Choose a later step to measure to.");
      return;
    }
    setState(card, "loading", "Loading…");
    let answer;
    try {
      answer = await api("/v0/funnel/time_to_convert", { query: { ...overall(current.query), from_step: fromStep, to_step: toStep }, errors: false });
    } catch (error) {
      if (asked !== latest.ttc) return;
      setState(card, "error");
      ttcChart = destroy(ttcChart);
      showError(error, $("#ttc-error"));
      throw error;
    }
    if (asked !== latest.ttc) return;
    renderTimeToConvert(card, answer);
  }

  function renderTimeToConvert(card, answer) {
    const group = answer.data[0] ?? { users: 0, histogram: [] };
    card.dataset.users = String(group.users);
    card.dataset.histogram = JSON.stringify(group.histogram.map((bin) => bin.users));
    const fact = (term, value) => el("div", {}, el("dt", {}, term), el("dd", {}, value));
    $("#ttc-facts").replaceChildren(
      fact(counted(), count(group.users)),
      ...["p25", "p50", "p75", "p90", "p99"].map((p) => fact(p === "p50" ? "Median" : p, duration(group[`${p}_seconds`]))),
      fact("Mean", duration(group.mean_seconds)),
    );
    ttcChart = destroy(ttcChart);
    if (!group.users) {
      setState(card, "empty", `Nobody reached step ${answer.to_step} in these dates.`);
      return;
    }
    setState(card, "ready");
    const bins = group.histogram;
    ttcChart = window.funnels.chart($("#ttc-chart"), {
      type: "bar",
      data: {
        labels: bins.map((bin) => duration(bin.from_seconds)),
        datasets: [{ label: "Users", data: bins.map((bin) => bin.users), backgroundColor: "#12b886", borderRadius: 3 }],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: {
          y: { beginAtZero: true, ticks: { precision: 0 }, grid: { color: "#eef0f4" } },
          x: { grid: { display: false }, title: { display: true, text: "at least" }, ticks: { maxRotation: 0, autoSkip: true } },
        },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              title: (items) => `${duration(bins[items[0].dataIndex].from_seconds)} to ${duration(bins[items[0].dataIndex].to_seconds)}`,
              label: (item) => `${count(item.raw)} ${counted().toLowerCase()} (${percent(item.raw / group.users)})`,
            },
          },
        },
      },
    });
  }

  // --- the people behind a step ---------------------------------------------------------------------------

  const OUTCOME_TEXT = { reached: "reached", converted: "converted (reached the last step)", dropped: "dropped off before" };

  /** Open the list: the users who reached (or dropped before) `step`, of one breakdown value if given. */
  async function openPeople(step, outcome, breakdownValue) {
    const { sample, ...whole } = current.query; // people are every user's, not the sample's (sampling.js)
    const params = { ...whole, step: String(step), outcome };
    if (current.query.breakdown && breakdownValue !== undefined) params.breakdown_value = breakdownValue === "" ? "(none)" : breakdownValue;
    const card = $("#people-card");
    card.hidden = false;
    $("#people-outcome").value = outcome;
    $("#people-outcome").querySelector('option[value="dropped"]').disabled = step < 2;
    card.dataset.step = String(step);
    card.dataset.breakdownValue = params.breakdown_value ?? "";
    const stepName = `${step}. ${stepLabel(current.steps[step - 1].name)}`;
    $("#people-title").textContent = `People: ${OUTCOME_TEXT[outcome]} ${stepName}${params.breakdown_value ? ` · ${current.query.breakdown} = ${params.breakdown_value}` : ""}`;
    const csv = new URLSearchParams({ ...params, format: "csv" });
    $("#people-csv").href = `/v0/funnel/people?${csv}`;
    $("#people-table").tBodies[0].replaceChildren();
    $("#people-table").tHead.replaceChildren(
      el("tr", {}, el("th", {}, "User"), el("th", { class: "num" }, "Last step"), current.query.breakdown ? el("th", {}, current.query.breakdown) : null, current.steps.map((s, index) => el("th", {}, `${index + 1}. ${stepLabel(s.name)}`))),
    );
    people = { params, next_cursor: null };
    card.scrollIntoView({ block: "nearest" });
    await loadPeople();
  }

  async function loadPeople() {
    const card = $("#people-card");
    const asked = ++latest.people;
    const { params, next_cursor } = people;
    const query = { ...params, limit: String(PEOPLE_PAGE) };
    if (next_cursor) query.cursor = next_cursor;
    setState(card, "loading", "Loading…");
    $("#people-more").hidden = true;
    clearError($("#people-error"));
    let answer;
    try {
      answer = await api("/v0/funnel/people", { query, errors: false });
    } catch (error) {
      if (asked !== latest.people) return;
      setState(card, "error");
      showError(error, $("#people-error"));
      throw error;
    }
    if (asked !== latest.people) return;
    people.next_cursor = answer.next_cursor;
    const body = $("#people-table").tBodies[0];
    body.append(
      ...answer.data.map((row) =>
        el(
          "tr",
          { dataset: { userKey: row.user_key, lastStep: row.last_step } },
          // A link to their events on the People page, for a key that may open it (scope admin).
          el("td", {}, $("#analyses").hasAttribute("data-people-page") ? el("a", { href: `/people?${new URLSearchParams({ key: row.user_key })}`, title: "Their events" }, row.user_key) : row.user_key),
          el("td", { class: "num" }, String(row.last_step)),
          current.query.breakdown ? el("td", {}, row.breakdown ?? "") : null,
          row.times.map((time) => el("td", { class: "nowrap" }, time ? formatTime(time) : "–")),
        ),
      ),
    );
    card.dataset.users = String(answer.users);
    $("#people-count").textContent = `${count(body.rows.length)} of ${count(answer.users)} ${counted().toLowerCase()}`;
    $("#people-more").hidden = !answer.next_cursor;
    setState(card, answer.users ? "ready" : "empty", answer.users ? "" : "Nobody here.");
  }

  // --- wiring ---------------------------------------------------------------------------------------------

  /** Where a click on the funnel landed: a bar (step, breakdown value of its series), via Chart.js. */
  function barAt(event) {
    const chart = window.Chart?.getChart?.($("#funnel-chart"));
    if (!chart) return null;
    const [hit] = chart.getElementsAtEventForMode(event, "nearest", { intersect: true }, false);
    if (!hit) return null;
    const row = chart.data.datasets[hit.datasetIndex].rows[hit.index];
    return { step: row.step, breakdown: row.breakdown };
  }

  on($("#funnel-chart")?.parentElement ?? document.createElement("div"), "click", async (event) => {
    if (!current) return;
    const bar = barAt(event);
    if (bar) await openPeople(bar.step, "reached", current.query.breakdown ? bar.breakdown : undefined);
  });

  const rowTarget = (event) => event.target.closest("#funnel-table tbody tr[data-step], #dropoffs li[data-to]");

  async function pick(node) {
    if (node.matches("li")) await openPeople(Number(node.dataset.to), "dropped");
    else await openPeople(Number(node.dataset.step), "reached", current.query.breakdown ? node.dataset.breakdown : undefined);
  }

  on(document, "click", async (event) => {
    const node = current && rowTarget(event);
    if (node) await pick(node);
  });
  on(document, "keydown", async (event) => {
    const node = current && (event.key === "Enter" || event.key === " ") && rowTarget(event);
    if (!node) return;
    event.preventDefault();
    await pick(node);
  });

  on($("#trends-interval"), "change", loadTrends);
  on($("#ttc-from"), "change", loadTimeToConvert);
  on($("#ttc-to"), "change", loadTimeToConvert);
  on($("#people-outcome"), "change", async () => {
    const { step, breakdown_value } = people.params;
    await openPeople(Number(step), $("#people-outcome").value, breakdown_value);
  });
  on($("#people-more"), "click", loadPeople);
  on($("#people-close"), "click", async () => {
    $("#people-card").hidden = true;
    latest.people += 1;
  });

  function shown(query) {
    current = { query: funnelOnly(query), steps: JSON.parse(query.steps) };
    $("#analyses").hidden = false;
    $("#people-card").hidden = true;
    latest.people += 1;
    // The rows and drop-offs open the people list: reachable by keyboard too.
    for (const node of document.querySelectorAll("#funnel-table tbody tr[data-step], #dropoffs li[data-to]")) {
      node.tabIndex = 0;
      node.classList.add("pickable");
      node.title = node.matches("li") ? "Who dropped off here" : "Who reached this step";
    }
    fillStepSelects();
    for (const node of document.querySelectorAll("#analyses .counted")) node.textContent = counted();
    // Both panels load at once; an API error is already shown in its own card, anything else on the page.
    for (const load of [loadTrends, loadTimeToConvert]) {
      load().catch((error) => {
        if (error instanceof ApiError) return;
        showError(error);
        throw error;
      });
    }
  }

  function cleared() {
    current = null;
    latest.trends += 1;
    latest.ttc += 1;
    latest.people += 1;
    trendsChart = destroy(trendsChart);
    ttcChart = destroy(ttcChart);
    $("#analyses").hidden = true;
  }

  const hooks = (window.funnels.pageHooks ??= { query: [], url: [], filled: [], rendered: [], started: [] });
  hooks.rendered.push((query) => (query ? shown(query) : cleared()));
})();
