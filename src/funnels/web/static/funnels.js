// Funnels: the funnel builder (steps, filters, dates, window, order, users, breakdown) and its chart and table,
// all from the JSON API: GET /v0/funnel runs the query; /v0/events/names, /properties and /values suggest
// events, operands and values; GET /v0/funnels lists the configured funnels. The address bar holds the
// whole query as /v0/funnel's own query string, so a reload or a shared link shows the same funnel.
"use strict";

(() => {
  const { api, el, on, ready, showError, clearError, duration } = window.funnels;
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

  const form = $("#builder");
  const config = JSON.parse(form.dataset.builder); // stepTypes, operators, breakdowns, min/maxSteps, defaults
  const errorBox = $("#funnel-error");
  const stepList = $("#steps");
  const PARAMS = ["date_from", "date_to", "steps", "window_seconds", "funnel_type", "identity", "breakdown", "breakdown_top_n", "breakdown_attribution", "exclusions", "hold_constant"];
  const exclusionList = $("#exclusions");

  let uid = 0; // makes datalist ids unique
  let chart = null;

  // The page's other scripts (saved.js, compare.js) load before this one and hook in (`funnels.pageHooks`):
  // `query` adds parameters to each run's query, `url` adds some to the address bar only, `filled` hears the
  // builder filled from parameters, `rendered` each answer shown (null when none is), `started` the page's
  // parameters once this script has started. They call back through `funnels.page`.
  const hooks = (window.funnels.pageHooks ??= { query: [], url: [], filled: [], rendered: [], started: [] });
  window.funnels.page = { fillForm: (params) => fillForm(params), readQuery: () => readQuery(), run: (options) => run(options) };

  // --- formatting -----------------------------------------------------------------------------------------

  const integer = new Intl.NumberFormat();
  const percent = (ratio) => (ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(1)}%`);
  const count = (n) => integer.format(n);

  /** A step's label: its name without the `::index` suffix the builder adds. */
  const stepLabel = (name) => name.replace(/::\d+$/, "");

  const isoDay = (date) => date.toISOString().slice(0, 10);

  // --- suggestions (the event catalog) ---------------------------------------------------------------------

  // Suggestions are for the builder's dates: `range` is the date range they were fetched for (as query
  // parameters); answers are cached per step and operand until the dates change.
  const catalog = { range: null, properties: new Map(), values: new Map(), names: new Map() };

  /** The builder's dates as the catalog's parameters: none (all time) until both are set and in order. */
  function dateRange() {
    const date_from = $("#date-from").value;
    const date_to = $("#date-to").value;
    return date_from && date_to && date_from <= date_to ? { date_from, date_to } : {};
  }

  /** After the dates changed: drop the cached suggestions and fetch the names again. True if they changed. */
  function syncCatalog() {
    const range = dateRange();
    if (catalog.range && JSON.stringify(range) === JSON.stringify(catalog.range)) return false;
    catalog.range = range;
    catalog.properties = new Map();
    catalog.values = new Map();
    loadNames(); // suggestions arrive when they arrive
    return true;
  }

  /** One <datalist> per step type, filled from GET /v0/events/names: type `event` offers the stored types. */
  async function loadNames() {
    const range = catalog.range;
    const query = { ...range, limit: 1000 };
    const answer = await api("/v0/events/names", { query, errors: false }).catch(() => null);
    if (!answer || range !== catalog.range) return; // failed, or the dates changed meanwhile
    const byType = new Map(config.stepTypes.map((type) => [type, []]));
    byType.get("event").push(...answer.types.map((t) => ({ name: t.type, count: t.count })));
    for (const item of answer.data) if (byType.has(item.type)) byType.get(item.type).push({ name: item.event, count: item.count });
    for (const [type, names] of byType) {
      const list = el("datalist", { id: `events-${type}` }, names.map(({ name }) => el("option", { value: name })));
      document.getElementById(list.id)?.remove();
      document.body.append(list);
    }
    catalog.names = byType;
    for (const node of $$("[data-step]", stepList)) fillPick(node);
  }

  /** A step's pick-list: every name the catalog has for its type (with counts), to choose without typing. */
  function fillPick(stepNode) {
    const pick = $('[name="pick"]', stepNode);
    const names = catalog.names.get($('[name="type"]', stepNode).value) ?? [];
    const label = names.length ? `Pick one of ${count(names.length)}` : "None seen";
    pick.replaceChildren(
      el("option", { value: "" }, label),
      ...names.map(({ name, count: n }) => el("option", { value: name }, n === undefined ? name : `${name} · ${count(n)}`)),
    );
    pick.disabled = !names.length;
  }

  // What a step matches, in words (the step types are the API's, and terse).
  const TYPE_WORDS = { page: "page view", screen: "screen view", identify: "identify call", group: "group call", alias: "alias call", track: "track event" };

  /** "any page view", "track event named “connect”", ... for a step's type and event. */
  function stepMeaning(type, event) {
    if (type === "event") return event ? `any ${TYPE_WORDS[event] ?? `${event} event`} (whatever its name)` : "any event of a type: page, track, screen …";
    const what = TYPE_WORDS[type] ?? `${type} event`;
    return event ? `${what} named “${event}”` : `a ${what} of one name`;
  }

  function describeStep(stepNode) {
    const { type, event } = readStep(stepNode);
    $(".step-meaning", stepNode).textContent = `Matches ${stepMeaning(type, event)}`;
  }

  /** GET /v0/events/properties for a step's (type, event) in the builder's dates (else all time), cached
   * until the dates change; null if it failed, or if the dates changed before it answered. */
  async function operandsOf(type, event, allTime = false) {
    const key = `${type}\u0000${event}\u0000${allTime}`;
    const { properties } = catalog;
    if (!properties.has(key)) {
      const query = { ...(allTime ? {} : catalog.range), type, event };
      properties.set(key, api("/v0/events/properties", { query, errors: false }).catch(() => null));
    }
    const answer = await properties.get(key);
    return properties === catalog.properties ? answer : null;
  }

  /** The operands of one step (standard columns with values, then property keys) into its datalist. */
  async function loadOperands(stepNode) {
    const { type, event } = readStep(stepNode);
    const list = $(`#${stepNode.dataset.operands}`, stepNode); // found before the node is in the page too
    if (!event) return list.replaceChildren();
    const answer = await operandsOf(type, event);
    if (!answer) return list.replaceChildren();
    const operands = [...answer.properties, ...answer.columns.filter((column) => column.count > 0)];
    list.replaceChildren(...operands.map((o) => el("option", { value: o.operand }, `${o.count} events`)));
  }

  /** The common values of one filter's operand into the filter's datalist (GET /v0/events/values). */
  async function loadValues(stepNode, filterNode) {
    const { type, event } = readStep(stepNode);
    const operand = $('[name="operand"]', filterNode).value.trim();
    const list = $(`#${filterNode.dataset.values}`, filterNode);
    if (!event || !operand) return list.replaceChildren();
    const key = `${type}\u0000${event}\u0000${operand}`;
    const { values } = catalog;
    if (!values.has(key)) {
      const query = { ...catalog.range, type, event, operand, limit: 50 };
      values.set(key, api("/v0/events/values", { query, errors: false }).catch(() => null));
    }
    const answer = await values.get(key);
    if (values !== catalog.values) return; // the dates changed meanwhile
    list.replaceChildren(...(answer?.data ?? []).map((v) => el("option", { value: v.value }, `${v.count} events`)));
  }

  /** The dates changed: suggestions for the new range, for every step and filter already there. */
  function datesChanged() {
    if (!syncCatalog()) return;
    for (const node of [...$$("[data-step]", stepList), ...$$("[data-exclusion]", exclusionList)]) {
      loadOperands(node);
      for (const row of $$("[data-filter]", node)) loadValues(node, row);
    }
    loadBreakdownKeys();
  }

  // --- the builder ----------------------------------------------------------------------------------------

  function filterRow(stepNode, filter = { operand: "", operator: "equals", value: "" }) {
    const values = `values-${++uid}`;
    const row = el(
      "div",
      { class: "filter", dataset: { filter: "", values } },
      el("input", { name: "operand", value: filter.operand, list: stepNode.dataset.operands, placeholder: "property or column", "aria-label": "Operand" }),
      el("select", { name: "operator", "aria-label": "Operator" }, config.operators.map((op) => el("option", { value: op, selected: op === filter.operator }, op))),
      el("input", { name: "value", value: filter.value, list: values, placeholder: "value", "aria-label": "Value" }),
      el("button", { type: "button", class: "button ghost small icon", title: "Remove this filter", dataset: { action: "remove-filter" } }, "×"),
      el("datalist", { id: values }),
    );
    $('[name="operand"]', row).addEventListener("change", () => loadValues(stepNode, row));
    $('[name="value"]', row).addEventListener("focus", () => loadValues(stepNode, row));
    return row;
  }

  function stepRow(step = { type: "track", event: "", filters: [] }) {
    const operands = `operands-${++uid}`;
    const node = el(
      "li",
      { class: "step", dataset: { step: "", operands, name: step.name ?? "", nameFor: step.name ? `${step.type}/${step.event}` : "" } },
      el(
        "div",
        { class: "step-head" },
        el("span", { class: "step-num" }),
        el("select", { name: "type", "aria-label": "Step type" }, config.stepTypes.map((t) => el("option", { value: t, selected: t === step.type }, t))),
        el("input", { name: "event", value: step.event, list: `events-${step.type}`, placeholder: "event name", required: true, "aria-label": "Event" }),
        el("span", { class: "step-tools" },
          el("button", { type: "button", class: "button ghost small icon", title: "Move up", dataset: { action: "up" } }, "↑"),
          el("button", { type: "button", class: "button ghost small icon", title: "Move down", dataset: { action: "down" } }, "↓"),
          el("button", { type: "button", class: "button ghost small icon", title: "Remove this step", dataset: { action: "remove-step" } }, "×"),
        ),
      ),
      el("div", { class: "step-info" },
        el("p", { class: "step-meaning muted" }),
        el("select", { name: "pick", class: "event-pick", "aria-label": "Pick an event seen", title: "Pick from the events seen in these dates" }),
      ),
      el("div", { class: "filters" }),
      el("button", { type: "button", class: "button ghost small add-filter", dataset: { action: "add-filter" } }, "+ Filter"),
      el("datalist", { id: operands }),
    );
    $(".filters", node).append(...(step.filters ?? []).map((filter) => filterRow(node, filter)));
    const typeSelect = $('[name="type"]', node);
    typeSelect.addEventListener("change", () => {
      $('[name="event"]', node).setAttribute("list", `events-${typeSelect.value}`);
      fillPick(node);
      describeStep(node);
      loadOperands(node);
    });
    $('[name="event"]', node).addEventListener("change", () => loadOperands(node));
    $('[name="event"]', node).addEventListener("input", () => describeStep(node));
    const pick = $('[name="pick"]', node);
    pick.addEventListener("change", () => {
      if (!pick.value) return;
      $('[name="event"]', node).value = pick.value;
      pick.value = "";
      describeStep(node);
      loadOperands(node);
    });
    fillPick(node);
    describeStep(node);
    return node;
  }

  // --- exclusions: an event, with filters as a step's, between two steps (closed funnels) ---------------

  function stepChoices(select, value) {
    const count = $$("[data-step]", stepList).length;
    const chosen = Math.min(Math.max(Number(value) || 1, 1), count);
    select.replaceChildren(...Array.from({ length: count }, (_, i) => el("option", { value: String(i + 1), selected: i + 1 === chosen }, String(i + 1))));
  }

  function exclusionRow(exclusion = { type: "track", event: "", from_step: 1, to_step: 2 }) {
    const operands = `operands-${++uid}`;
    const node = el(
      "li",
      { class: "exclusion", dataset: { exclusion: "", operands } },
      el(
        "div",
        { class: "exclusion-head" },
        el("select", { name: "type", "aria-label": "Excluded event's type" }, config.stepTypes.map((t) => el("option", { value: t, selected: t === exclusion.type }, t))),
        el("input", { name: "event", value: exclusion.event ?? "", list: `events-${exclusion.type}`, placeholder: "event name", "aria-label": "Excluded event" }),
        el("span", { class: "muted" }, "between steps"),
        el("select", { name: "from_step", "aria-label": "From step", dataset: { value: String(exclusion.from_step ?? 1) } }),
        el("span", { class: "muted" }, "and"),
        el("select", { name: "to_step", "aria-label": "To step", dataset: { value: String(exclusion.to_step ?? 2) } }),
        el("button", { type: "button", class: "button ghost small", title: "Add a filter on the excluded event's properties", dataset: { action: "add-filter" } }, "+ Filter"),
        el("button", { type: "button", class: "button ghost small icon", title: "Remove this exclusion", dataset: { action: "remove-exclusion" } }, "×"),
      ),
      el("div", { class: "filters" }),
      el("datalist", { id: operands }),
    );
    $(".filters", node).append(...(Array.isArray(exclusion.filters) ? exclusion.filters : []).map((filter) => filterRow(node, filter)));
    const typeSelect = $('[name="type"]', node);
    typeSelect.addEventListener("change", () => {
      $('[name="event"]', node).setAttribute("list", `events-${typeSelect.value}`);
      loadOperands(node);
    });
    $('[name="event"]', node).addEventListener("change", () => loadOperands(node));
    loadOperands(node);
    for (const name of ["from_step", "to_step"]) {
      const select = $(`[name="${name}"]`, node);
      select.addEventListener("change", () => (select.dataset.value = select.value));
    }
    return node;
  }

  /** Each exclusion's step choices follow the number of steps (a choice past the last becomes the last). */
  function renumberExclusions() {
    for (const node of $$("[data-exclusion]", exclusionList)) {
      for (const name of ["from_step", "to_step"]) {
        const select = $(`[name="${name}"]`, node);
        stepChoices(select, select.dataset.value);
      }
    }
  }

  function readExclusions() {
    return $$("[data-exclusion]", exclusionList)
      .map((node) => ({
        type: $('[name="type"]', node).value,
        event: $('[name="event"]', node).value.trim(),
        filters: readFilters(node),
        from_step: Number($('[name="from_step"]', node).value),
        to_step: Number($('[name="to_step"]', node).value),
      }))
      .filter((exclusion) => exclusion.event);
  }

  /** Exclusions apply to closed funnels only: disabled otherwise (held properties apply to every type). */
  function syncExclusionsBox() {
    $("#exclusions-box").disabled = $("#funnel-type").value !== "closed";
  }

  $("#add-exclusion").addEventListener("click", () => {
    const node = exclusionRow();
    exclusionList.append(node);
    renumberExclusions();
    $('[name="event"]', node).focus();
  });
  exclusionList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const node = button.closest("[data-exclusion]");
    const action = button.dataset.action;
    if (action === "remove-exclusion") node.remove();
    if (action === "add-filter") $('[name="operand"]', $(".filters", node).appendChild(filterRow(node))).focus();
    if (action === "remove-filter") button.closest("[data-filter]").remove();
  });
  $("#funnel-type").addEventListener("change", syncExclusionsBox);

  /** Number the steps and enable only the moves and removals that keep 2–10 steps. */
  function renumber() {
    renumberExclusions();
    const steps = $$("[data-step]", stepList);
    steps.forEach((node, index) => {
      $(".step-num", node).textContent = String(index + 1);
      $('[data-action="up"]', node).disabled = index === 0;
      $('[data-action="down"]', node).disabled = index === steps.length - 1;
      $('[data-action="remove-step"]', node).disabled = steps.length <= config.minSteps;
    });
    $("#add-step").disabled = steps.length >= config.maxSteps;
    attributionSteps(steps.length);
  }

  /** The attribution select: first and last touch, then "Step K" for each step (kept when it still exists). */
  function attributionSteps(count) {
    const select = $("#attribution");
    const chosen = select.value;
    for (const option of [...select.options].slice(2)) option.remove();
    for (let k = 1; k <= count; k += 1) select.append(el("option", { value: `step:${k}` }, `Step ${k}'s event`));
    select.value = [...select.options].some((option) => option.value === chosen) ? chosen : "first_touch";
  }

  /** The breakdown's controls follow its select: a property key for "Event property…" and "Person
   * property…"; Top and the attribution only with a breakdown, and no attribution for a person property
   * (the value is the person's latest identify's, not an event's). */
  function breakdownChanged() {
    const chosen = $("#breakdown").value;
    const person = chosen === "person.";
    $("#breakdown-property-field").hidden = chosen !== "properties." && !person;
    $("#top-n").disabled = !chosen;
    if (person) $("#attribution").value = "first_touch";
    $("#attribution").disabled = !chosen || person;
    $("#attribution").title = person ? "A person property's value is the one their latest identify set" : "";
    loadBreakdownKeys(); // suggestions arrive when they arrive
  }

  /** Property keys for the breakdown's key field, the most common first: a person property's from identify
   * events (any name: step type `event`) of all time, as a person's value may come from an identify long
   * before the dates; an event property's from the steps' events in the dates. */
  async function loadBreakdownKeys() {
    const chosen = $("#breakdown").value;
    const list = $("#breakdown-keys");
    if (chosen !== "properties." && chosen !== "person.") return list.replaceChildren();
    const sources =
      chosen === "person."
        ? [{ type: "event", event: "identify", allTime: true }]
        : $$("[data-step]", stepList).map(readStep).filter((step) => step.event);
    const answers = await Promise.all(sources.map(({ type, event, allTime }) => operandsOf(type, event, allTime)));
    if ($("#breakdown").value !== chosen) return; // changed meanwhile: that change fills the list
    const counts = new Map();
    for (const answer of answers) {
      for (const { operand, count } of answer?.properties ?? []) counts.set(operand, (counts.get(operand) ?? 0) + count);
    }
    const keys = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    list.replaceChildren(...keys.map(([key, count]) => el("option", { value: key }, `${count} events`)));
  }

  function setSteps(steps) {
    stepList.replaceChildren(...steps.map(stepRow));
    renumber();
    for (const node of $$("[data-step]", stepList)) loadOperands(node);
  }

  // Step and filter buttons, by their data-action.
  stepList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const node = button.closest("[data-step]");
    const action = button.dataset.action;
    if (action === "up" && node.previousElementSibling) node.previousElementSibling.before(node);
    if (action === "down" && node.nextElementSibling) node.nextElementSibling.after(node);
    if (action === "remove-step") node.remove();
    if (action === "add-filter") $(".filters", node).append(filterRow(node));
    if (action === "remove-filter") button.closest("[data-filter]").remove();
    renumber();
  });

  $("#add-step").addEventListener("click", () => {
    const node = stepRow();
    stepList.append(node);
    renumber();
    $('[name="event"]', node).focus();
  });

  function readStep(node) {
    return { type: $('[name="type"]', node).value, event: $('[name="event"]', node).value.trim() };
  }

  /** A step's or an exclusion's filter rows, those with an operand. */
  function readFilters(node) {
    return $$("[data-filter]", node)
      .map((row) => ({
        operand: $('[name="operand"]', row).value.trim(),
        operator: $('[name="operator"]', row).value,
        value: $('[name="value"]', row).value,
      }))
      .filter((filter) => filter.operand);
  }

  /** The builder as /v0/funnel's query parameters (strings, as in a query string). */
  function readQuery() {
    const used = new Set();
    const steps = $$("[data-step]", stepList).map((node, index) => {
      const { type, event } = readStep(node);
      // Keep a name that came with the query (a configured funnel's) while the step is unchanged.
      let name = node.dataset.nameFor === `${type}/${event}` ? node.dataset.name : `${event}::${index}`;
      if (used.has(name)) name = `${event}::${index}`;
      used.add(name);
      return { type, event, name, filters: readFilters(node) };
    });
    const query = {
      date_from: $("#date-from").value,
      date_to: $("#date-to").value,
      steps: JSON.stringify(steps),
      window_seconds: String(Math.round(Number($("#window").value) * Number($("#window-unit").value))),
      funnel_type: $("#funnel-type").value,
    };
    const exclusions = readExclusions();
    if (exclusions.length && query.funnel_type === "closed") query.exclusions = JSON.stringify(exclusions);
    const held = $("#hold-constant").value.split(",").map((item) => item.trim()).filter(Boolean);
    if (held.length) query.hold_constant = JSON.stringify(held);
    // Stitched is the API's default: only raw is spelled out, so a stitched link is the same as before.
    if ($("#identity").value === "raw") query.identity = "raw";
    const chosen = $("#breakdown").value;
    const keyed = chosen === "properties." || chosen === "person.";
    const breakdown = keyed ? `${chosen}${$("#breakdown-property").value.trim()}` : chosen;
    if (breakdown) {
      query.breakdown = breakdown;
      query.breakdown_top_n = $("#top-n").value || String(config.defaultTopN);
      // First touch is the API's default: only another attribution is spelled out (links stay as before).
      if ($("#attribution").value !== "first_touch") query.breakdown_attribution = $("#attribution").value;
    }
    for (const add of hooks.query) Object.assign(query, add());
    return query;
  }

  /** Fill the builder from /v0/funnel parameters (the URL's, or a configured funnel's `query`). */
  function fillForm(params) {
    let steps = [];
    try {
      steps = JSON.parse(params.steps ?? "[]");
    } catch {
      steps = [];
    }
    if (!Array.isArray(steps) || !steps.length) steps = [{ type: "event", event: "page" }, { type: "track", event: "" }];
    // The dates first: the steps' suggestions are for them.
    const today = new Date();
    $("#date-to").value = params.date_to ?? params.dateTo ?? isoDay(today);
    $("#date-from").value = params.date_from ?? params.dateFrom ?? isoDay(new Date(today.getTime() - 30 * 86400000));
    syncCatalog();
    setSteps(steps.map((s) => ({ type: s.type ?? "track", event: s.event ?? "", name: s.name, filters: s.filters ?? [] })));
    // The window in the largest unit that divides it.
    const seconds = Number(params.window_seconds ?? config.defaultWindowSeconds);
    const unit = [86400, 3600, 60].find((u) => seconds % u === 0) ?? 60;
    $("#window-unit").value = String(unit);
    $("#window").value = String(unit === 60 && seconds % 60 ? seconds / 60 : seconds / unit);
    $("#funnel-type").value = ["open", "strict"].includes(params.funnel_type) ? params.funnel_type : "closed";
    let exclusions = [];
    try {
      exclusions = JSON.parse(params.exclusions ?? "[]");
    } catch {
      exclusions = [];
    }
    exclusions = (Array.isArray(exclusions) ? exclusions : []).filter((x) => x && typeof x === "object");
    exclusionList.replaceChildren(...exclusions.map((x) => exclusionRow({ type: "track", from_step: 1, to_step: 2, ...x })));
    renumberExclusions();
    let held = [];
    try {
      held = JSON.parse(params.hold_constant ?? "[]");
    } catch {
      held = [];
    }
    $("#hold-constant").value = Array.isArray(held) ? held.filter((item) => typeof item === "string").join(", ") : "";
    syncExclusionsBox();
    $("#identity").value = params.identity === "raw" ? "raw" : "stitched";
    const breakdown = params.breakdown ?? "";
    const prefix = ["properties.", "person."].find((start) => breakdown.startsWith(start));
    $("#breakdown").value = prefix ?? breakdown;
    $("#breakdown-property").value = prefix ? breakdown.slice(prefix.length) : "";
    $("#top-n").value = params.breakdown_top_n ?? String(config.defaultTopN);
    $("#attribution").value = params.breakdown_attribution ?? "first_touch";
    if (!$("#attribution").value) $("#attribution").value = "first_touch"; // a step the funnel does not have
    breakdownChanged();
    for (const hear of hooks.filled) hear(params);
  }

  $("#breakdown").addEventListener("change", breakdownChanged);
  $("#breakdown-property").addEventListener("focus", loadBreakdownKeys); // the steps may have changed (cached)
  for (const input of [$("#date-from"), $("#date-to")]) input.addEventListener("change", datesChanged);

  // Date presets: today (UTC, as the API's days are) and the N days before it, as the default range is.
  $("#date-presets").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-days]");
    if (!button) return;
    const today = new Date();
    $("#date-to").value = isoDay(today);
    $("#date-from").value = isoDay(new Date(today.getTime() - Number(button.dataset.days) * 86400000));
    datesChanged();
  });

  // --- running ----------------------------------------------------------------------------------------------

  let runs = 0; // the latest run's number: an older run's answer (back, then forward at once) is dropped

  /** Run the builder's query: keep it in the address bar, call GET /v0/funnel, show the answer. */
  async function run({ push = true } = {}) {
    const current = ++runs;
    clearError(errorBox);
    const query = readQuery();
    const search = `?${new URLSearchParams(Object.assign({}, query, ...hooks.url.map((add) => add())))}`;
    if (search !== location.search) history[push ? "pushState" : "replaceState"](null, "", search);
    setBusy(true);
    setStatus("Running…");
    try {
      // Errors are shown here, not by api(): an older run's failure must not land next to a newer run.
      const answer = await api("/v0/funnel", { query, errors: false });
      if (current !== runs) return;
      render(query, answer);
      setStatus(`${answer.statistics.elapsed.toFixed(3)} s · ${count(answer.statistics.rows_read)} rows read`);
    } catch (error) {
      if (current !== runs) return;
      setStatus("Failed");
      showError(error, errorBox);
      throw error;
    } finally {
      if (current === runs) setBusy(false);
    }
  }

  /** While a query runs: the button says so and is disabled, and the old results are dimmed. */
  function setBusy(busy) {
    const button = $("#run");
    button.disabled = busy;
    button.textContent = busy ? "Running…" : "Run funnel";
    const results = $("#results");
    results.classList.toggle("loading", busy);
    if (busy) results.setAttribute("aria-busy", "true");
    else results.removeAttribute("aria-busy");
  }

  /** No query (back to the page as opened): no results either, as when it was opened. */
  function showEmpty() {
    runs += 1; // a run still under way is no longer shown
    setBusy(false);
    clearError(errorBox);
    setStatus("");
    if (chart) chart.destroy();
    chart = null;
    $("#results-empty").hidden = false;
    $("#results-body").hidden = true;
    $("#results-caption").textContent = "Choose the steps and run the funnel.";
    for (const hear of hooks.rendered) hear(null, null);
  }

  function setStatus(text) {
    const status = $("#results-status");
    status.textContent = text;
    status.hidden = !text;
  }

  on(form, "submit", async (event) => {
    event.preventDefault();
    await run();
  });

  // Back and forward between runs show the query of that entry.
  on(window, "popstate", async () => {
    const params = Object.fromEntries(new URLSearchParams(location.search));
    fillForm(params);
    if (params.steps) await run({ push: false });
    else showEmpty();
  });

  // --- results ----------------------------------------------------------------------------------------------

  const PALETTE = ["#3b5bdb", "#12b886", "#f59f00", "#e8590c", "#7048e8", "#1098ad", "#d6336c", "#5c940d", "#868e96", "#364fc7"];

  /** The answer's rows as series: one per breakdown value (or one, "All users"), each with a row per step. */
  function seriesOf(answer, breakdown) {
    const series = new Map();
    for (const row of answer.data) {
      const name = breakdown ? row.breakdown : "All users";
      if (!series.has(name)) series.set(name, []);
      series.get(name).push(row);
    }
    return [...series].map(([name, rows]) => ({ name, rows: rows.sort((a, b) => a.step - b.step) }));
  }

  function render(query, answer) {
    const steps = JSON.parse(query.steps);
    const labels = steps.map((step, index) => `${index + 1}. ${stepLabel(step.name)}`);
    const breakdown = query.breakdown ?? "";
    const series = seriesOf(answer, breakdown);
    // Totals per step (over every breakdown value): the first row of each step carries `total`.
    const totals = steps.map((_, index) => answer.data.find((row) => row.step === index + 1)?.total ?? 0);

    $("#results-empty").hidden = true;
    $("#results-body").hidden = false;
    const range = `${query.date_from} – ${query.date_to}`;
    const excluded = query.exclusions ? JSON.parse(query.exclusions).length : 0;
    const held = query.hold_constant ? ` · same ${JSON.parse(query.hold_constant).join(", ")}` : "";
    const who = (query.identity === "raw" ? " · raw ids" : "") + (excluded ? ` · ${excluded} excluded` : "") + held;
    $("#results-caption").textContent = breakdown
      ? `${range} · by ${breakdown}${query.breakdown_attribution ? `, ${query.breakdown_attribution.replace("_", " ")}` : ""} (top ${query.breakdown_top_n}) · ${query.funnel_type}${who}`
      : `${range} · ${query.funnel_type}${who}`;

    renderSummary(steps, totals, series, breakdown);
    renderChart(labels, series, breakdown);
    renderDropoffs(labels, totals);
    renderTable(labels, series, breakdown, window.funnels.counted(query));
    for (const hear of hooks.rendered) hear(query, answer);
  }

  /** The headline numbers, also as data- attributes (a canvas cannot be read by tests). */
  function renderSummary(steps, totals, series, breakdown) {
    const summary = $("#funnel-summary");
    const first = totals[0];
    const last = totals[totals.length - 1];
    const median = !breakdown && series[0] ? series[0].rows[series[0].rows.length - 1].median_seconds_from_start : null;
    // With a breakdown there is no overall median (medians do not add up): the values' medians, lowest to highest.
    const medians = series.map((s) => s.rows[s.rows.length - 1]?.median_seconds_from_start).filter((m) => m !== null && m !== undefined);
    summary.dataset.users = JSON.stringify(totals);
    summary.dataset.breakdown = breakdown;
    summary.dataset.series = JSON.stringify(series.map((s) => s.name));
    const fact = (term, value, hint) => el("div", {}, el("dt", {}, term), el("dd", {}, value, hint ? el("small", { class: "muted" }, ` ${hint}`) : null));
    // With a breakdown: the best converting value, every one of them when several tie.
    const rate = (s) => s.rows[s.rows.length - 1]?.conversion_from_start ?? -1;
    const top = Math.max(...series.map(rate));
    const best = breakdown && top >= 0 ? series.filter((s) => rate(s) === top) : [];
    summary.dataset.best = JSON.stringify(best.map((s) => s.name));
    summary.dataset.medians = JSON.stringify(breakdown ? medians : median === null ? [] : [median]);
    const names = best.map((s) => s.name || "(none)").join(", ");
    const spread = medians.length ? `${duration(Math.min(...medians))} – ${duration(Math.max(...medians))}` : "–";
    const facts = [
      fact("Entered", count(first)),
      fact("Converted", count(last), `reached step ${steps.length}`),
      fact("Conversion", first ? percent(last / first) : "–"),
      breakdown
        ? fact(medians.length > 1 ? "Median time to convert, by value" : "Median time to convert", medians.length === 1 ? duration(medians[0]) : spread)
        : fact("Median time to convert", duration(median)),
    ];
    if (best.length) facts.push(fact(best.length > 1 ? `Best converting (${best.length}-way tie)` : "Best converting", names, percent(top)));
    summary.replaceChildren(...facts); // (a null child would be written as the text "null")
  }

  // Draws each bar's users and conversion from the start above it; with a breakdown (grouped bars, narrow)
  // the users alone. What it drew is kept on the canvas as data-bar-labels (a canvas cannot be read by tests).
  const barLabels = {
    id: "barLabels",
    afterDatasetsDraw(instance) {
      const { ctx } = instance;
      const drawn = [];
      ctx.save();
      ctx.textAlign = "center";
      if (instance.data.datasets.length !== 1) {
        ctx.fillStyle = "#18202f";
        instance.data.datasets.forEach((dataset, index) => {
          if (!instance.isDatasetVisible(index)) return;
          instance.getDatasetMeta(index).data.forEach((bar, step) => {
            const text = count(dataset.rows[step].users);
            // The largest of 11, 10 and 9 px that fits the bar's width.
            const size = [11, 10, 9].find((px) => {
              ctx.font = `600 ${px}px system-ui, sans-serif`;
              return ctx.measureText(text).width <= bar.width + 2;
            });
            if (size) {
              ctx.fillText(text, bar.x, bar.y - 5);
            } else {
              // Wider than its bar (many values, a narrow screen): upright, reading upwards from the bar.
              ctx.save();
              ctx.translate(bar.x, bar.y - 4);
              ctx.rotate(-Math.PI / 2);
              ctx.textAlign = "left";
              ctx.textBaseline = "middle";
              ctx.fillText(text, 0, 0);
              ctx.restore();
            }
            drawn.push(text);
          });
        });
        ctx.restore();
        instance.canvas.dataset.barLabels = JSON.stringify(drawn);
        return;
      }
      const meta = instance.getDatasetMeta(0);
      const rows = instance.data.datasets[0].rows;
      meta.data.forEach((bar, index) => {
        const row = rows[index];
        ctx.fillStyle = "#18202f";
        ctx.font = "600 13px system-ui, sans-serif";
        ctx.fillText(count(row.users), bar.x, bar.y - 22);
        ctx.fillStyle = "#5d6779";
        ctx.font = "12px system-ui, sans-serif";
        const previous = index ? ` · ${percent(row.conversion_from_previous)} of prev.` : "";
        ctx.fillText(`${percent(row.conversion_from_start)}${previous}`, bar.x, bar.y - 7);
        drawn.push(count(row.users));
      });
      ctx.restore();
      instance.canvas.dataset.barLabels = JSON.stringify(drawn);
    },
  };

  function renderChart(labels, series, breakdown) {
    const datasets = series.map((s, index) => ({
      label: s.name === "" ? "(none)" : s.name,
      data: s.rows.map((row) => row.users),
      rows: s.rows,
      backgroundColor: PALETTE[index % PALETTE.length],
      borderRadius: 4,
      maxBarThickness: breakdown ? 36 : 110,
    }));
    if (chart) chart.destroy();
    const canvas = $("#funnel-chart");
    if (!canvas) return; // replaced by the "no Chart.js" note
    chart = window.funnels.chart(canvas, {
      type: "bar",
      data: { labels, datasets },
      plugins: [barLabels],
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        layout: { padding: { top: breakdown ? 44 : 34 } }, // room for an upright label over the tallest bar
        scales: {
          y: { beginAtZero: true, ticks: { precision: 0 }, grid: { color: "#eef0f4" } },
          x: { grid: { display: false } },
        },
        plugins: {
          legend: { display: Boolean(breakdown), position: "bottom", labels: { boxWidth: 12, boxHeight: 12 } },
          tooltip: {
            callbacks: {
              label(item) {
                const row = item.dataset.rows[item.dataIndex];
                const who = breakdown ? `${item.dataset.label}: ` : "";
                return `${who}${count(row.users)} users · ${percent(row.conversion_from_start)} of start`;
              },
              afterLabel(item) {
                const row = item.dataset.rows[item.dataIndex];
                if (row.step === 1) return "";
                return `${percent(row.conversion_from_previous)} of previous · ${percent(row.dropoff_from_previous)} dropped off`;
              },
            },
          },
        },
      },
    });
  }

  /** A change as a signed percentage: "−45.4%", "+3.0%" (an open funnel's later step may have more), "0.0%". */
  const change = (ratio) => (ratio < 0 ? `−${percent(-ratio)}` : ratio > 0 ? `+${percent(ratio)}` : percent(0));

  /** Between each two bars: how many of all users dropped off. */
  function renderDropoffs(labels, totals) {
    const items = [];
    for (let index = 1; index < totals.length; index += 1) {
      const previous = totals[index - 1];
      const lost = previous - totals[index];
      items.push(
        el(
          "li",
          { dataset: { from: index, to: index + 1, dropped: lost } },
          el("span", { class: "dropoff-arrow" }, `${index} → ${index + 1}`),
          el("strong", {}, previous ? change(-lost / previous) : "–"),
          el("span", { class: "muted" }, `${count(lost)} dropped off`),
        ),
      );
    }
    $("#dropoffs").replaceChildren(...items);
  }

  function renderTable(labels, series, breakdown, counted) {
    const table = $("#funnel-table");
    const heads = ["Step", ...(breakdown ? [breakdown] : []), counted, "From start", "From prev.", "Drop-off", "Time from prev.", "Time from start"];
    table.tHead.replaceChildren(el("tr", {}, heads.map((head, index) => el("th", { class: index >= (breakdown ? 2 : 1) ? "num" : "", title: head.startsWith("Time") ? "Median time to convert" : null }, head))));
    const rows = [];
    series.forEach((s, seriesIndex) => {
      s.rows.forEach((row) => {
        rows.push(
          el(
            "tr",
            {
              class: row.step === 1 && seriesIndex ? "group-start" : "",
              dataset: {
                step: row.step,
                breakdown: breakdown ? row.breakdown : "",
                users: row.users,
                conversionFromStart: row.conversion_from_start ?? "",
                conversionFromPrevious: row.conversion_from_previous ?? "",
              },
            },
            el("td", {}, labels[row.step - 1]),
            breakdown ? el("td", {}, row.step === 1 ? el("span", { class: "swatch", dataset: { color: seriesIndex % PALETTE.length } }) : null, row.breakdown === "" ? el("span", { class: "muted" }, "(none)") : row.breakdown) : null,
            el("td", { class: "num" }, count(row.users)),
            el("td", { class: "num" }, percent(row.conversion_from_start)),
            el("td", { class: "num" }, percent(row.conversion_from_previous)),
            el("td", { class: "num" }, percent(row.dropoff_from_previous)),
            el("td", { class: "num" }, duration(row.median_seconds_from_previous)),
            el("td", { class: "num" }, duration(row.median_seconds_from_start)),
          ),
        );
      });
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: heads.length, class: "muted" }, "Nobody entered this funnel in these dates.")));
    table.tBodies[0].replaceChildren(...rows);
  }

  // --- configured funnels -----------------------------------------------------------------------------------

  async function loadConfigured() {
    const list = $("#configured-list");
    const answer = await api("/v0/funnels", { errors: false }).catch((error) => {
      list.replaceChildren(el("li", { class: "muted" }, `Could not load them: ${error.message}`));
      return null;
    });
    if (!answer) return;
    if (!answer.data.length) {
      list.replaceChildren(el("li", { class: "muted" }, "No config loaded: the server runs without funnels of its own."));
      return;
    }
    list.replaceChildren(
      ...answer.data.map((funnel) => {
        const steps = funnel.steps.map((s) => s.event).join(" → ");
        const button = el(
          "button",
          { type: "button", class: "configured-item", disabled: !funnel.query, title: funnel.reason ?? `Chart ${funnel.id}`, dataset: { funnelId: funnel.id } },
          el("strong", {}, funnel.id),
          el("span", { class: "muted" }, funnel.query ? steps : funnel.reason),
        );
        on(button, "click", async () => {
          fillForm(funnel.query);
          await run();
        });
        return el("li", {}, button);
      }),
    );
  }

  // --- start ------------------------------------------------------------------------------------------------

  ready(async () => {
    const params = Object.fromEntries(new URLSearchParams(location.search));
    fillForm(params); // and the suggestions for its dates
    loadConfigured();
    const running = PARAMS.some((name) => name in params) && params.steps ? run({ push: false }) : null;
    for (const started of hooks.started) started(params);
    await running;
  });
})();
