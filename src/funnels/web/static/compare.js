// Funnels, "Compare with the previous period": the builder's checkbox adds `compare=previous_period` to the
// /v0/funnel query (and so to the address bar), and each answer's `comparison` is shown under the results
// as a table of each row's users and conversion in both periods and the change. Loads before funnels.js and
// hooks into it (`funnels.pageHooks`).
"use strict";

(() => {
  const { el } = window.funnels;
  const hooks = (window.funnels.pageHooks ??= { query: [], url: [], filled: [], rendered: [], started: [] });
  const box = document.getElementById("compare");

  hooks.query.push(() => (box.checked ? { compare: "previous_period" } : {}));
  hooks.filled.push((params) => {
    box.checked = params.compare === "previous_period";
  });
  hooks.rendered.push((query, answer) => render(query, answer?.comparison ?? null));

  const integer = new Intl.NumberFormat();
  const percent = (ratio) => (ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(1)}%`);
  const count = (n) => (n === null || n === undefined ? "–" : integer.format(n));
  const signed = (n, text) => (n === null || n === undefined ? "–" : `${n > 0 ? "+" : n < 0 ? "−" : "±"}${text(Math.abs(n))}`);
  const tone = (n) => (n > 0 ? "num change-up" : n < 0 ? "num change-down" : "num");

  /** The comparison under the results (created on first use), or nothing when the answer has none. */
  function render(query, comparison) {
    let section = document.getElementById("comparison");
    if (!comparison) {
      section?.remove();
      return;
    }
    if (!section) {
      section = el("section", { id: "comparison", class: "comparison", "aria-labelledby": "comparison-title" });
      document.getElementById("results-body").append(section);
    }
    const breakdown = query.breakdown ?? "";
    const steps = JSON.parse(query.steps);
    const label = (row) => `${row.step}. ${steps[row.step - 1].name.replace(/::\d+$/, "")}`;
    const heads = ["Step", ...(breakdown ? [breakdown] : []), window.funnels.counted(query), "Previous", "Change", "From start", "Previous", "Change"];
    const rows = comparison.data.map((row) =>
      el(
        "tr",
        {
          dataset: {
            step: row.step,
            breakdown: breakdown ? row.breakdown : "",
            users: row.users,
            previousUsers: row.previous_users ?? "",
            usersChange: row.users_change ?? "",
            changePoints: row.conversion_from_start_change_points ?? "",
          },
        },
        el("td", {}, label(row)),
        breakdown ? el("td", {}, row.breakdown === "" ? "(none)" : row.breakdown) : null,
        el("td", { class: "num" }, count(row.users)),
        el("td", { class: "num" }, count(row.previous_users)),
        el("td", { class: tone(row.users_change) }, signed(row.users_change, count), row.users_change_ratio !== null ? el("small", { class: "muted" }, ` (${signed(row.users_change_ratio, percent)})`) : null),
        el("td", { class: "num" }, percent(row.conversion_from_start)),
        el("td", { class: "num" }, percent(row.previous_conversion_from_start)),
        el("td", { class: tone(row.conversion_from_start_change_points) }, signed(row.conversion_from_start_change_points, (n) => `${n.toFixed(1)} pts`)),
      ),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: heads.length, class: "muted" }, "Nobody entered this funnel in these dates.")));
    section.replaceChildren(
      el("h3", { id: "comparison-title" }, `Compared with the previous period: ${comparison.date_from} – ${comparison.date_to}`),
      el(
        "div",
        { class: "table-wrap" },
        el("table", { class: "table", id: "comparison-table" }, el("thead", {}, el("tr", {}, heads.map((head, index) => el("th", { class: index >= (breakdown ? 2 : 1) ? "num" : "" }, head)))), el("tbody", {}, rows)),
      ),
    );
  }
})();
