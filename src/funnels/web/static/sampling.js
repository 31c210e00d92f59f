// Funnels, "Sample": the builder's select adds `sample=0.1` (or 0.01) to the /v0/funnel query (and so to
// the address bar): the funnel is answered from that deterministic sample of users, its counts scaled and
// its sampling error stated (docs/semantics.md, "Sampling"). A sampled answer gets a note above the chart
// with each step's 95% intervals; an exact answer that took longer than the page's `slowSeconds` gets an offer to run
// it again from a 10% sample. Trends, time to convert and people under the funnel stay exact (analyses.js
// leaves `sample` out). Loads before funnels.js and hooks into it (`funnels.pageHooks`).
"use strict";

(() => {
  const { el } = window.funnels;
  const hooks = (window.funnels.pageHooks ??= { query: [], url: [], filled: [], rendered: [], started: [] });
  const select = document.getElementById("sample");
  const form = document.getElementById("builder");
  // An exact answer slower than this is offered a sample (the page's `slowSeconds`, read at each answer).
  const slowSeconds = () => JSON.parse(form.dataset.builder).slowSeconds;
  const OFFERED_RATE = "0.1";

  hooks.query.push(() => (select.value ? { sample: select.value } : {}));
  hooks.filled.push((params) => {
    select.value = ["0.1", "0.01"].includes(params.sample) ? params.sample : "";
    if (params.sample && !select.value) {
      // Another rate from a link: keep it, as an option of its own.
      select.append(el("option", { value: params.sample }, `${Number(params.sample) * 100}% of users`));
      select.value = params.sample;
    }
  });
  hooks.rendered.push((query, answer) => render(query, answer));

  const integer = new Intl.NumberFormat();
  const percent = (ratio) => `${(ratio * 100).toFixed(1)}%`;

  /** The note (a sampled answer) or the offer (a slow exact one) above the chart; nothing otherwise. */
  function render(query, answer) {
    document.getElementById("sample-note")?.remove();
    if (!answer) return;
    const body = document.getElementById("results-body");
    if (answer.sample) {
      body.prepend(note(query, answer));
    } else if (answer.statistics.elapsed > slowSeconds()) {
      body.prepend(offer(answer.statistics.elapsed));
    }
  }

  function note(query, answer) {
    const { rate, unit, users_sampled: sampled, scale } = answer.sample;
    const steps = JSON.parse(query.steps);
    const label = (row) => `${row.step}. ${steps[row.step - 1].name.replace(/::\d+$/, "")}`;
    const units = { person: "persons", user_key: "user ids", group: "groups" }[unit] ?? unit;
    const rows = answer.data.map((row) =>
      el(
        "li",
        { dataset: { step: row.step, low: row.users_interval[0], high: row.users_interval[1] } },
        `${label(row)}${query.breakdown ? ` · ${row.breakdown === "" ? "(none)" : row.breakdown}` : ""}: `,
        `${integer.format(row.users_interval[0])}–${integer.format(row.users_interval[1])}`,
        row.conversion_from_start_interval && row.step > 1
          ? `, from start ${percent(row.conversion_from_start_interval[0])}–${percent(row.conversion_from_start_interval[1])}`
          : "",
      ),
    );
    return el(
      "div",
      { id: "sample-note", class: "alert note sample-note", role: "note" },
      el("strong", {}, `Estimated from a ${rate * 100}% sample of ${units}`),
      ` (${integer.format(sampled)} entered): counts are the sample's × ${scale}, conversion rates and times the sample's own. 95% intervals:`,
      el("ul", {}, rows),
    );
  }

  function offer(seconds) {
    const button = el("button", { type: "button", class: "button", id: "sample-offer-run" }, "Sample 10%");
    button.addEventListener("click", () => {
      select.value = OFFERED_RATE;
      document.getElementById("run").click();
    });
    return el(
      "div",
      { id: "sample-note", class: "alert note sample-offer", role: "note" },
      `This funnel took ${seconds.toFixed(1)} s. A 10% sample of users answers in a fraction of the time, with the sampling error stated. `,
      button,
    );
  }
})();
