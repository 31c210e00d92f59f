// Funnels, "Count": users, or the instances of a model the config declares (`aggregate_by`, e.g.
// organizations: each counts its members' events). The select is on the page only when the config declares
// models; it adds `aggregate_by` to the /v0/funnel query (and so to the address bar and the analyses under
// the results), and the caption says what is counted. Loads before funnels.js and hooks into it
// (`funnels.pageHooks`).
"use strict";

(() => {
  const hooks = (window.funnels.pageHooks ??= { query: [], url: [], filled: [], rendered: [], started: [] });
  const select = document.getElementById("aggregate-by");

  /** What a query's answer counts, as the Count select names it: "Users", or a model's instances
   * ("Organizations") with `aggregate_by`. The results table, the comparison and the analyses say it. */
  window.funnels.counted = (query) => {
    const model = query?.aggregate_by;
    const option = model && select ? select.querySelector(`option[value="${CSS.escape(model)}"]`) : null;
    return option?.textContent ?? (model || "Users");
  };
  if (!select) return; // no models declared: users are counted

  hooks.query.push(() => (select.value ? { aggregate_by: select.value } : {}));
  hooks.filled.push((params) => {
    select.value = params.aggregate_by ?? "";
    if (!select.value) select.value = ""; // a model the config no longer declares
  });
  hooks.rendered.push((query) => {
    const caption = document.getElementById("results-caption");
    if (query?.aggregate_by && caption) caption.textContent += ` · counting ${window.funnels.counted(query).toLowerCase()}`;
  });
})();
