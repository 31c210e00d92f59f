// Deliveries, per action: "By action", every action's jobs by status (GET /v0/actions/summary: sent, held
// out, capped, suppressed, cancelled, failing = failed or dead, unknown, waiting = scheduled or sending),
// and "Holdouts and lift", each action with a holdout (GET /v0/lift): its treated and held-out groups' conversion on the
// action's goal (rate, converted of decided jobs, pending), the difference in percentage points and the
// relative lift, each with its 95% interval, the p-value and a verdict in words (while inconclusive, the
// jobs each group needs). Each card stays hidden while it has no row.
"use strict";

(() => {
  const { api, el, ready } = window.funnels;
  const card = document.getElementById("lift-card");
  if (!card) return;
  const integer = new Intl.NumberFormat();
  const percent = (ratio) => (ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(1)}%`);
  const signed = (ratio, unit) => `${ratio >= 0 ? "+" : "−"}${Math.abs(ratio * 100).toFixed(1)}${unit}`;
  const points = (ratio) => signed(ratio, " pp");
  // A goal's window in its largest whole unit (14 d, 36 h, 90 min, 45 s): `within` is whole seconds.
  const days = (seconds) => {
    const unit = [[86400, "d"], [3600, "h"], [60, "min"]].find(([size]) => seconds % size === 0);
    return unit ? `${seconds / unit[0]} ${unit[1]}` : `${seconds} s`;
  };

  function group(counts) {
    if (!counts) return "–";
    const share = ` ${integer.format(counts.converted)} of ${integer.format(counts.jobs)}`;
    const pending = counts.pending ? `, +${integer.format(counts.pending)} pending` : "";
    return [percent(counts.rate), el("div", { class: "muted small under" }, share + pending)];
  }

  function verdict(row) {
    const lift = row.lift;
    if (!row.goal) return el("span", { class: "muted" }, "No goal: the funnel's last step (set goal)");
    if (!lift || lift.p_value === null) return el("span", { class: "muted" }, "Waiting for outcomes in both groups");
    if (lift.significant) return el("span", { class: `badge ${lift.absolute > 0 ? "ok" : "bad"}` }, lift.absolute > 0 ? "Helps" : "Hurts");
    const needed = lift.needed_per_group;
    return needed
      ? el("span", { class: "muted" }, `Inconclusive: needs ~${integer.format(needed.treated)} treated and ${integer.format(needed.holdout)} held out`)
      : el("span", { class: "muted" }, "No difference so far");
  }

  function liftCell(lift) {
    if (!lift || lift.absolute === null) return "–";
    const [low, high] = lift.absolute_ci;
    return [points(lift.absolute), el("div", { class: "muted small under" }, ` ${signed(low, "")} to ${points(high)}`)];
  }

  // The ratio of the rates minus 1; none while the held-out rate is 0 (its interval is still shown).
  function relativeCell(lift) {
    if (!lift || !lift.relative_ci) return "–";
    const [low, high] = lift.relative_ci;
    const interval = el("div", { class: "muted small under" }, ` ${signed(low, "")} to ${signed(high, "%")}`);
    return [lift.relative === null ? "–" : signed(lift.relative, "%"), interval];
  }

  function render(rows) {
    card.hidden = !rows.length;
    document.querySelector("#lift-table tbody").replaceChildren(
      ...rows.map((row) =>
        el(
          "tr",
          { dataset: { funnel: row.funnel, step: row.step, action: row.action } },
          el("td", {}, el("code", {}, row.funnel), el("span", { class: "muted" }, ` · ${row.step} ${row.event} · `), `${row.type} #${row.action}`, el("span", { class: "muted small" }, ` (${row.holdout_percent}% held out)`)),
          el("td", {}, row.goal ? `${row.goal.event} within ${days(row.goal.within_seconds)}` : "–"),
          el("td", { class: "num treated" }, group(row.treated)),
          el("td", { class: "num held-out" }, group(row.holdout)),
          el("td", { class: "num lift" }, liftCell(row.lift)),
          el("td", { class: "num relative" }, relativeCell(row.lift)),
          el("td", { class: "num p-value" }, row.lift?.p_value === null || !row.lift ? "–" : row.lift.p_value.toFixed(3)),
          el("td", { class: "verdict" }, verdict(row)),
        ),
      ),
    );
    card.dataset.state = "ready";
  }

  function renderSummary(rows) {
    const box = document.getElementById("by-action-card");
    box.hidden = !rows.length;
    const cell = (n, name) => el("td", { class: `num ${name}` }, n ? integer.format(n) : el("span", { class: "muted" }, "0"));
    document.querySelector("#by-action-table tbody").replaceChildren(
      ...rows.map((row) => {
        const s = row.statuses;
        return el(
          "tr",
          { dataset: { funnel: row.funnel, step: row.step, action: row.action } },
          el("td", {}, el("code", {}, row.funnel), el("span", { class: "muted" }, ` · step ${row.step} · `), `${row.type} #${row.action}`),
          cell(s.sent, "sent"),
          cell(s.held_out, "held-out"),
          cell(s.capped, "capped"),
          cell(s.suppressed, "suppressed"),
          cell(s.cancelled, "cancelled"),
          cell(s.failed + s.dead, "failing"),
          cell(s.unknown, "unknown"),
          cell(s.scheduled + s.sending, "waiting"),
        );
      }),
    );
    box.dataset.state = "ready";
  }

  ready(async () => {
    const [summary, lifts] = await Promise.allSettled([api("/v0/actions/summary", { errors: false }), api("/v0/lift", { errors: false })]);
    if (summary.status === "fulfilled") renderSummary(summary.value.data);
    // No config loaded (404) or no holdout: the card stays hidden; the log below is what matters here.
    if (lifts.status === "fulfilled") render(lifts.value.data);
  });
})();
