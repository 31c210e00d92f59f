// People: a model's instances, newest first, searched by any part of an id or the name and paged with the
// API's cursor (GET /v0/models/{model}?q=&cursor=; `?model=&q=` in the URL); and one instance by any of its
// ids, or by an anonymous id linked to one (GET /v0/models/{model}/{id}): ids, properties, parents and
// children, progress in each funnel, and its timeline (cursor-paginated with `before`). `?model=&id=` in the
// URL opens a person (`&limit=` sets the timeline's page size), so people link to each other and from the
// Deliveries page. Any user key, identified or not (GET /v0/events/users lists them, GET /v0/users/{key}
// shows one: the person it counts as, its linked keys, the instances they name and their events): `?key=`.
"use strict";

(() => {
  const { api, el, on, ready, formatTime, clearError, showError, ApiError } = window.funnels;
  const $ = (selector) => document.querySelector(selector);
  const form = $("#person-search");
  // Timeline items per request; `?limit=` in the URL changes it (1–200).
  const PAGE = Math.min(200, Math.max(1, Number(new URLSearchParams(location.search).get("limit")) || 25));
  const STATUS_BADGE = { sent: "ok", dead: "bad", failed: "warn", scheduled: "info", sending: "info", cancelled: "muted", held_out: "muted", capped: "muted", suppressed: "muted", unknown: "warn" };
  let current = null; // {model, id, before}
  const listForm = $("#people-filter");
  const LIST_PAGE = 25; // instances per request of the list
  let listing = null; // {model, q, cursor, shown}

  const personHref = (model, id) => `/people?${new URLSearchParams({ model, id })}`;
  const valueText = (value) => (typeof value === "string" ? value : JSON.stringify(value));
  const statusBadge = (status) => el("span", { class: `badge ${STATUS_BADGE[status] ?? "muted"}`, dataset: { status } }, status);

  function initials(name) {
    const words = String(name).split(/[\s._@-]+/).filter(Boolean);
    return (words.slice(0, 2).map((word) => word[0].toUpperCase()).join("") || "?");
  }

  function relationList(relations) {
    if (!relations.length) return [el("span", { class: "muted" }, "none")];
    return relations.map((relation) =>
      el(
        "a",
        { class: `relation${relation.exists ? "" : " missing"}`, href: personHref(relation.model, relation.id), dataset: { model: relation.model, id: relation.id }, title: relation.exists ? null : "Named by an identify call, not identified itself yet" },
        el("span", { class: "scope" }, relation.model),
        relation.id,
      ),
    );
  }

  function funnelProgress(funnel) {
    const done = funnel.steps.filter((step) => step.satisfied_at).length;
    return el(
      "div",
      { class: "funnel-progress", dataset: { funnel: funnel.id } },
      el(
        "div",
        { class: "funnel-progress-head" },
        el("code", {}, funnel.id),
        funnel.completed ? el("span", { class: "badge ok" }, "completed") : el("span", { class: "badge muted" }, `${done} of ${funnel.steps.length} steps`),
      ),
      el(
        "ol",
        { class: "progress-steps" },
        funnel.steps.map((step) =>
          el(
            "li",
            { class: step.satisfied_at ? "done" : "pending", dataset: { step: step.step, event: step.event, satisfied: step.satisfied_at ?? "" } },
            el("span", { class: "dot", "aria-hidden": "true" }, step.satisfied_at ? "✓" : String(step.step)),
            el("span", { class: "step-name" }, step.event),
            el("span", { class: "step-when muted" }, step.satisfied_at ? formatTime(step.satisfied_at) : "not yet"),
          ),
        ),
      ),
      funnel.holdouts.length
        ? el(
            "ul",
            { class: "holdout-groups muted small" },
            funnel.holdouts.map((h) =>
              el(
                "li",
                { dataset: { step: h.step, action: h.action, group: h.group } },
                `Step ${h.step} ${h.type} #${h.action} (${h.holdout_percent}% holdout): `,
                el("span", { class: `badge ${h.group === "held_out" ? "muted" : "info"}` }, h.group === "held_out" ? "held out" : "treated"),
              ),
            ),
          )
        : null,
    );
  }

  function propertySummary(properties) {
    const entries = Object.entries(properties ?? {});
    if (!entries.length) return null;
    return el("span", { class: "props" }, entries.slice(0, 4).map(([name, value]) => el("span", { class: "prop" }, `${name}: ${valueText(value)}`)));
  }

  function timelineItem(item) {
    if (item.kind === "event") {
      return el(
        "li",
        { class: "timeline-item event", dataset: { kind: "event", id: item.id } },
        el("span", { class: "marker", "aria-hidden": "true" }),
        el(
          "div",
          { class: "timeline-body" },
          el("div", { class: "timeline-line" }, el("strong", { class: "item-title" }, item.event), el("span", { class: "kind" }, item.type), propertySummary(item.properties)),
        ),
        el("time", { class: "muted nowrap", datetime: item.at }, formatTime(item.at)),
      );
    }
    const when = item.sent_at ? `sent ${formatTime(item.sent_at)}` : item.status === "scheduled" ? `due ${formatTime(item.due_at)}` : `updated ${formatTime(item.updated_at)}`;
    return el(
      "li",
      { class: "timeline-item action", dataset: { kind: "action", id: item.id } },
      el("span", { class: "marker", "aria-hidden": "true" }),
      el(
        "div",
        { class: "timeline-body" },
        el(
          "div",
          { class: "timeline-line" },
          el("strong", { class: "item-title" }, `${item.type} action`),
          statusBadge(item.status),
          el("span", { class: "muted" }, `${item.funnel} · step ${item.step} (${item.event}) · `, el("a", { href: `/deliveries?${new URLSearchParams({ job: item.id })}` }, `job #${item.id}`)),
        ),
        item.last_error ? el("div", { class: "error-text" }, item.last_error) : null,
        el("div", { class: "muted small" }, when),
      ),
      el("time", { class: "muted nowrap", datetime: item.at }, formatTime(item.at)),
    );
  }

  function render(person) {
    const name = person.displayName || person.id;
    $("#person-name").textContent = name;
    $("#person-avatar").textContent = initials(name);
    $("#person-model").textContent = person.model;
    $("#person-seen").textContent = `identified ${formatTime(person.created_at)} · updated ${formatTime(person.updated_at)}`;
    $("#person-ids").replaceChildren(
      ...person.ids.map((id) => el("code", { class: "id-chip", dataset: { id } }, id)),
      // Anonymous or aliased ids that events link to this person (identity stitching): they find it too.
      ...(person.linked_ids ?? []).map((id) => el("code", { class: "id-chip linked", dataset: { linkedId: id }, title: "Linked by identity stitching (an anonymous or aliased id)" }, id)),
    );
    $("#person-parents").replaceChildren(...relationList(person.parents));
    $("#person-children").replaceChildren(...relationList(person.children));
    $("#person-deliveries").replaceChildren(el("a", { href: `/deliveries?${new URLSearchParams({ model: person.model, id: person.id })}` }, "See this instance's deliveries"));
    const properties = Object.entries(person.properties);
    $("#person-properties tbody").replaceChildren(
      ...(properties.length
        ? properties.map(([property, value]) => el("tr", { dataset: { property } }, el("td", {}, el("code", {}, property)), el("td", { class: "value" }, valueText(value))))
        : [el("tr", {}, el("td", { colspan: 2, class: "muted" }, "No properties."))]),
    );
    $("#person-funnels").replaceChildren(
      ...(person.funnels.length ? person.funnels.map(funnelProgress) : [el("p", { class: "muted" }, "No funnel is configured for this model.")]),
    );
    renderOptOuts(person.unsubscribed);
    $("#timeline").replaceChildren();
    appendTimeline(person.timeline);
  }

  /** What the instance unsubscribed from, each with Subscribe again (PUT …/subscriptions). */
  function renderOptOuts(outs) {
    $("#person-opt-outs").replaceChildren(
      ...(outs.length
        ? outs.map((out) => {
            const again = el("button", { type: "button", class: "button ghost small" }, "Subscribe again");
            on(again, "click", () => changeSubscription(out.topic, true));
            return el("li", { dataset: { topic: out.topic } }, el("code", {}, out.topic), el("span", { class: "muted small" }, ` since ${formatTime(out.at)} (${out.source}) `), again);
          })
        : [el("li", { class: "muted" }, "Nothing: its emails and SMS go out.")]),
    );
  }

  async function changeSubscription(topic, subscribed) {
    const path = `/v0/models/${encodeURIComponent(current.model)}/${encodeURIComponent(current.id)}/subscriptions`;
    const answer = await api(path, { method: "PUT", body: { topic, subscribed } });
    renderOptOuts(answer.unsubscribed);
  }

  on($("#opt-out-form"), "submit", async (event) => {
    event.preventDefault();
    const input = $('#opt-out-form [name="topic"]');
    await changeSubscription(input.value.trim(), false);
    input.value = "";
  });

  function appendTimeline(timeline) {
    const list = $("#timeline");
    list.append(...timeline.items.map(timelineItem));
    if (!list.children.length) list.append(el("li", { class: "timeline-empty muted" }, "Nothing happened to this instance yet."));
    current.before = timeline.next_before ?? null;
    $("#timeline-more").hidden = !current.before;
  }

  function showOnly(which) {
    $("#person-empty").hidden = which !== "empty";
    $("#users-card").hidden = which !== "empty";
    $("#person-missing").hidden = which !== "missing";
    $("#person").hidden = which !== "person";
    $("#user").hidden = which !== "user";
  }

  // --- any user key ---------------------------------------------------------------------------------------

  const keyHref = (key) => `/people?${new URLSearchParams({ key })}`;
  let viewing = null; // {key, before}: the user key shown

  async function openKey(key) {
    clearError();
    current = null;
    const asked = (viewing = { key, before: null });
    let user;
    try {
      user = await api(`/v0/users/${encodeURIComponent(key)}`, { query: { limit: PAGE }, errors: false });
    } catch (error) {
      if (viewing !== asked) return;
      if (error instanceof ApiError && error.status === 404) {
        $("#person-missing-text").textContent = error.message;
        $("#person-missing-key").hidden = true;
        showOnly("missing");
        return;
      }
      showOnly("empty");
      showError(error);
      throw error;
    }
    if (viewing !== asked) return;
    $("#user-key").textContent = key;
    $("#user-avatar").textContent = initials(key);
    $("#user-person").textContent = user.person === key ? "Counted as itself in funnels" : `Counted as ${user.person} in funnels (identity stitching)`;
    $("#user-keys").replaceChildren(...user.keys.map((id) => el("a", { class: "id-chip", href: keyHref(id), dataset: { key: id } }, id)));
    $("#user-instances").replaceChildren(
      ...(user.instances.length
        ? user.instances.map((ref) => el("a", { class: "relation", href: personHref(ref.model, ref.id), dataset: { model: ref.model, id: ref.id } }, el("span", { class: "scope" }, ref.model), ref.id))
        : [el("span", { class: "muted" }, "none: never identified as an instance")]),
    );
    $("#user-timeline").replaceChildren();
    appendUserTimeline(user.timeline);
    showOnly("user");
    document.title = `${key} · People · funnels`;
  }

  function appendUserTimeline(timeline) {
    const list = $("#user-timeline");
    list.append(...timeline.items.map(timelineItem));
    if (!list.children.length) list.append(el("li", { class: "timeline-empty muted" }, "No events."));
    viewing.before = timeline.next_before ?? null;
    $("#user-more").hidden = !viewing.before;
  }

  on($("#user-more"), "click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const asked = viewing;
      const user = await api(`/v0/users/${encodeURIComponent(asked.key)}`, { query: { limit: PAGE, before: asked.before } });
      if (viewing === asked) appendUserTimeline(user.timeline);
    } finally {
      button.disabled = false;
    }
  });

  const usersForm = $("#users-filter");
  let keys = null; // {q, cursor}: the user-key list shown

  async function usersMore(asked) {
    const query = { limit: LIST_PAGE };
    if (asked.q) query.q = asked.q;
    if (asked.cursor) query.cursor = asked.cursor;
    const answer = await api("/v0/events/users", { query });
    if (keys !== asked) return;
    const body = $("#users-table tbody");
    if (!asked.cursor) body.replaceChildren();
    body.append(
      ...answer.data.map((row) =>
        el(
          "tr",
          { dataset: { key: row.user_key } },
          el("td", {}, el("a", { href: keyHref(row.user_key) }, row.user_key)),
          el("td", { class: "num" }, String(row.events)),
          el("td", { class: "nowrap muted" }, formatTime(row.last_seen)),
          el("td", {}, row.identified ? "yes" : el("span", { class: "muted" }, "anonymous")),
        ),
      ),
    );
    asked.cursor = answer.next_cursor;
    if (!body.children.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: 4, class: "muted" }, asked.q ? `No user key contains “${asked.q}”.` : "No events yet.")));
    $("#users-more").hidden = !asked.cursor;
  }

  async function listKeys(q) {
    usersForm.elements.q.value = q;
    keys = { q, cursor: null };
    await usersMore(keys);
  }

  on(usersForm, "submit", async (event) => {
    event.preventDefault();
    await listKeys(usersForm.elements.q.value.trim());
  });

  on($("#users-more"), "click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      await usersMore(keys);
    } finally {
      button.disabled = false;
    }
  });

  async function open(model, id) {
    clearError();
    form.elements.model.value = model;
    form.elements.id.value = id;
    const asked = (current = { model, id, before: null });
    let person;
    try {
      person = await api(`/v0/models/${encodeURIComponent(model)}/${encodeURIComponent(id)}`, { query: { limit: PAGE }, errors: false });
    } catch (error) {
      if (current !== asked) return; // another person was opened meanwhile
      if (error instanceof ApiError && error.status === 404) {
        $("#person-missing-text").textContent = error.message;
        $("#person-missing-key").href = keyHref(id);
        $("#person-missing-key").hidden = false;
        showOnly("missing");
        return;
      }
      showOnly("empty");
      showError(error);
      throw error;
    }
    if (current !== asked) return; // another person was opened meanwhile: theirs is shown
    render(person);
    showOnly("person");
    document.title = `${person.displayName || person.id} · People · funnels`;
  }

  function fromUrl() {
    const params = new URLSearchParams(location.search);
    return { model: params.get("model") ?? "", id: params.get("id") ?? "", q: params.get("q") ?? "", key: params.get("key") ?? "" };
  }

  // --- the list -------------------------------------------------------------------------------------------

  function listedRow(model, item) {
    const more = item.id_count - item.ids.length;
    return el(
      "tr",
      { dataset: { id: item.id } },
      el("td", {}, el("a", { href: personHref(model, item.id), class: "person-link" }, item.displayName || item.id)),
      el("td", {}, item.ids.map((id) => el("code", { class: "id-chip" }, id)), more > 0 ? el("span", { class: "muted small" }, `+${more} more`) : null),
      el("td", { class: "nowrap muted" }, formatTime(item.created_at)),
    );
  }

  /** The next page of the list being shown (the first when its cursor is null). */
  async function listMore(asked) {
    const query = { limit: LIST_PAGE };
    if (asked.q) query.q = asked.q;
    if (asked.cursor) query.cursor = asked.cursor;
    const answer = await api(`/v0/models/${encodeURIComponent(asked.model)}`, { query });
    if (listing !== asked) return; // another list was asked for meanwhile
    const body = $("#people-table tbody");
    if (!asked.cursor) body.replaceChildren();
    body.append(...answer.data.map((item) => listedRow(asked.model, item)));
    asked.shown += answer.data.length;
    asked.cursor = answer.next_cursor;
    if (!body.children.length) {
      const none = asked.q ? `No ${asked.model} has an id or a name containing “${asked.q}”.` : `No ${asked.model} has been identified yet.`;
      body.append(el("tr", { class: "empty" }, el("td", { colspan: 3, class: "muted" }, none)));
    }
    $("#people-more").hidden = !asked.cursor;
    const what = asked.q ? ` matching “${asked.q}”` : "";
    $("#people-summary").textContent = `${asked.shown}${asked.cursor ? "+" : ""} ${asked.model} instance${asked.shown === 1 ? "" : "s"}${what}, newest first. Open one for its properties, progress and timeline.`;
  }

  async function list(model, q) {
    clearError();
    current = null;
    form.elements.model.value = model;
    listForm.elements.q.value = q;
    showOnly("empty");
    document.title = "People · funnels";
    listing = { model, q, cursor: null, shown: 0 };
    await listMore(listing);
  }

  const listHref = (model, q) => `/people?${new URLSearchParams(q ? { model, q } : { model })}`;

  on(listForm, "submit", async (event) => {
    event.preventDefault();
    const model = form.elements.model.value;
    const q = listForm.elements.q.value.trim();
    if (!model) return;
    history.pushState(null, "", listHref(model, q));
    await list(model, q);
  });

  on(form.elements.model, "change", async () => {
    if (current) return; // a person is open: the model is for the next lookup
    const model = form.elements.model.value;
    history.pushState(null, "", listHref(model, ""));
    await list(model, "");
  });

  on($("#people-more"), "click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      await listMore(listing);
    } finally {
      button.disabled = false;
    }
  });

  on(form, "submit", async (event) => {
    event.preventDefault();
    const model = form.elements.model.value;
    const id = form.elements.id.value.trim();
    if (!model || !id) return;
    history.pushState(null, "", personHref(model, id));
    await open(model, id);
  });

  on($("#timeline-more"), "click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const asked = current;
      const { model, id, before } = asked;
      const person = await api(`/v0/models/${encodeURIComponent(model)}/${encodeURIComponent(id)}`, { query: { limit: PAGE, before } });
      if (current === asked) appendTimeline(person.timeline);
    } finally {
      button.disabled = false;
    }
  });

  on(window, "popstate", async () => {
    const { model, id, q, key } = fromUrl();
    if (key) await openKey(key);
    else if (model && id) await open(model, id);
    else await list(model || form.elements.model.options[0]?.value || "", q);
  });

  ready(async () => {
    const config = await api("/v0/config");
    const select = form.elements.model;
    const wanted = fromUrl();
    if (wanted.key) await openKey(wanted.key);
    listKeys("").catch((error) => {
      if (!(error instanceof ApiError)) throw error;
    });
    const models = [...config.models];
    if (wanted.model && !models.includes(wanted.model)) models.push(wanted.model);
    select.replaceChildren(...models.map((model) => el("option", { value: model }, model)));
    if (!models.length) {
      select.replaceChildren(el("option", { value: "" }, "no models"));
      $("#person-empty").replaceChildren(el("h2", {}, "No models configured"), el("p", { class: "muted" }, "People are the instances of the config's models: start the server with --config."));
      return;
    }
    if (wanted.key) return;
    if (wanted.model && wanted.id) await open(wanted.model, wanted.id);
    else await list(wanted.model || models[0], wanted.q);
  });
})();
