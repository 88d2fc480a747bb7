// claim-ledger's timeline page. Plain JavaScript, no dependency, no build step.
//
// Every value from the ledger is written with textContent (never innerHTML), every data
// request goes to this origin's /v1 routes with the bearer token kept in sessionStorage,
// and every view has its own URL (deep links for incident tickets).
"use strict";

(function () {
  const TOKEN_KEY = "claim-ledger-token";
  const POLL_MS = 2000;
  const KIND_PARAM = {
    Pod: "pod_uid",
    SandboxClaim: "claim_uid",
    Sandbox: "sandbox_uid",
    PersistentVolumeClaim: "pvc_uid",
  };
  const SELECTORS = ["uid", "pod_uid", "claim_uid", "sandbox_uid", "pvc_uid"];

  const main = document.getElementById("main");
  const errorBox = document.getElementById("error");
  const integrityBox = document.getElementById("integrity");
  const liveDot = document.getElementById("live");

  let lastSeenSeq = null;
  let onNewEntries = null; // the current view's reaction to new entries
  let pollTimer = null;

  // ---------------------------------------------------------------- sign-in

  // A token in the fragment (#token=...) signs in and is removed from the address bar at
  // once, so it is neither kept in history nor shown to anyone looking at the screen.
  function takeTokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = fragment.get("token");
    if (token !== null) {
      if (token.trim() !== "") {
        sessionStorage.setItem(TOKEN_KEY, token.trim());
      }
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function showSignIn(message) {
    document.getElementById("signin").hidden = false;
    if (message) {
      showError(message);
    }
  }

  document.getElementById("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    if (input.value.trim() === "") {
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    location.reload();
  });

  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.href = "./";
  });

  // ---------------------------------------------------------------- helpers

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) {
        continue;
      }
      if (key === "class") {
        node.className = value;
      } else if (key === "text") {
        node.textContent = String(value);
      } else if (key.includes("-") || key === "href" || key === "title" || key === "role") {
        node.setAttribute(key, String(value));
      } else {
        node[key] = value;
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) {
        continue;
      }
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") {
        search.set(key, String(value));
      }
    }
    return "?" + search.toString();
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function setState(state) {
    main.setAttribute("data-state", state);
  }

  class HttpError extends Error {
    constructor(status, code, detail) {
      super(detail);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options) {
    const headers = { Authorization: "Bearer " + token() };
    const response = await fetch(path, {
      headers,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    if (options && options.raw && response.ok) {
      return response;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const code = body && body.error ? body.error : "http_" + response.status;
      const detail = body && body.detail ? body.detail : response.statusText;
      if (response.status === 401) {
        // Show no data under a refused token: only the error and the sign-in form.
        stopPolling();
        main.replaceChildren();
        integrityBox.replaceChildren();
        setState("error");
        showSignIn("The service refused the token (401 " + code + "): " + detail + ". Sign in with a valid token.");
      }
      throw new HttpError(response.status, code, detail);
    }
    return body;
  }

  function shortHash(hash) {
    return hash ? String(hash).slice(0, 12) + "…" : "";
  }

  function timeText(at) {
    if (!at) {
      return "-";
    }
    return String(at).replace("T", " ").replace(/(\.\d{3})\d*/, "$1");
  }

  function age(from, to) {
    const seconds = Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000);
    if (!isFinite(seconds)) {
      return "";
    }
    if (seconds < 90) {
      return Math.round(seconds) + " s";
    }
    if (seconds < 5400) {
      return Math.round(seconds / 60) + " min";
    }
    if (seconds < 172800) {
      return Math.round(seconds / 3600) + " h";
    }
    return Math.round(seconds / 86400) + " d";
  }

  function objectHref(kind, uid) {
    const param = KIND_PARAM[kind];
    return param ? query({ [param]: uid }) : null;
  }

  function objectLink(link) {
    const label = link.name
      ? (link.namespace ? link.namespace + "/" : "") + link.name
      : link.uid;
    const text = link.kind + " " + label;
    const href = link.recorded !== false ? objectHref(link.kind, link.uid) : null;
    if (!href) {
      return el("span", { class: "obj unrecorded", title: link.uid, text });
    }
    return el("a", {
      class: "obj",
      href,
      title: link.kind + " uid " + link.uid,
      "data-role": link.role,
      "data-uid": link.uid,
      text,
    });
  }

  function entryLink(seq, hash) {
    return el(
      "a",
      { class: "entry", href: query({ entry: seq }), title: "entry " + seq + (hash ? ", hash " + hash : ""), "data-entry": seq },
      "#" + seq,
      hash ? el("span", { class: "hash", text: " " + shortHash(hash) }) : null
    );
  }

  // ---------------------------------------------------------------- integrity

  async function renderIntegrity() {
    const integrity = await api("/v1/integrity");
    const checkpoint = integrity.checkpoint;
    const items = [
      el("span", { class: "item" }, el("b", { text: "head " }), entryLink(integrity.head.seq, integrity.head.hash)),
      el("span", { class: "item", title: "Merkle root at tree size " + integrity.tree_size, text: "root " + shortHash(integrity.root) }),
      el(
        "span",
        { class: "item " + (integrity.verified_at_open ? "ok" : "bad"), "data-verified": integrity.verified_at_open },
        integrity.verified_at_open ? "✓ verified at open" : "✗ failed verification at open: " + (integrity.corruption || "")
      ),
    ];
    if (checkpoint) {
      const covered = checkpoint.covers_entry_observed_at;
      items.push(
        el(
          "span",
          { class: "item", "data-checkpoint-size": checkpoint.size, title: checkpoint.note },
          "signed checkpoint: size " + checkpoint.size + ", origin " + checkpoint.origin +
            (covered ? ", covers entries to " + timeText(covered) + " (" + age(covered, integrity.now) + " ago)" : "")
        )
      );
    } else {
      items.push(el("span", { class: "item warn", text: "no signed checkpoint yet" }));
    }
    integrityBox.replaceChildren(...items);
    integrityBox.dataset.headSeq = integrity.head.seq;
    return integrity;
  }

  // A download of the export bundle of seqs from..to (within the latest checkpoint), with
  // the command that verifies it offline.
  function bundlePanel(integrity, from, to) {
    const checkpoint = integrity.checkpoint;
    const panel = el("div", { class: "bundle", id: "bundle" });
    if (!checkpoint) {
      panel.append(el("p", { text: "No signed checkpoint yet: no export bundle can be made." }));
      return panel;
    }
    if (from > checkpoint.size) {
      panel.append(el("p", { text: "The latest signed checkpoint (size " + checkpoint.size + ") does not cover seq " + from + " yet; the next one will." }));
      return panel;
    }
    const last = Math.min(to, checkpoint.size);
    const file = "claim-ledger-" + from + "-" + last + ".tar";
    const button = el("button", { type: "button", id: "download-bundle", text: "Download export bundle of seqs " + from + ".." + last });
    const status = el("span", { class: "muted" });
    button.addEventListener("click", async () => {
      status.textContent = " preparing…";
      try {
        const response = await api("/v1/export" + query({ bundle: "true", from_seq: from, to_seq: last }), { raw: true });
        const blob = await response.blob();
        const url = URL.createObjectURL(blob);
        const anchor = el("a", { href: url, download: file });
        document.body.append(anchor);
        anchor.click();
        anchor.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
        status.textContent = " saved as " + file;
      } catch (error) {
        status.textContent = " failed: " + error.message;
      }
    });
    panel.append(
      button,
      status,
      el("p", { class: "muted", text: "Verify it offline, trusting only the log's public key:" }),
      el("code", { class: "command", text: "claim-ledger verify-export " + file + " --trusted-key LOG.pub --origin " + checkpoint.origin })
    );
    if (last < to) {
      panel.append(el("p", { class: "muted", text: "Seqs after " + checkpoint.size + " are not under a signed checkpoint yet." }));
    }
    return panel;
  }

  // ---------------------------------------------------------------- timeline

  function selectorFrom(params) {
    for (const key of SELECTORS) {
      if (params.get(key)) {
        return { [key]: params.get(key) };
      }
    }
    if (params.get("kind") && params.get("namespace") && params.get("name")) {
      return { kind: params.get("kind"), namespace: params.get("namespace"), name: params.get("name") };
    }
    return null;
  }

  async function loadTimeline(selector) {
    const events = [];
    let page = null;
    let after = 0;
    // Follow the pages; a very long history is cut at 20 pages (the page says so).
    for (let i = 0; i < 20; i++) {
      page = await api("/v1/timeline" + query(Object.assign({ after_seq: after || null, limit: 1000 }, selector)));
      events.push(...page.events);
      if (page.next_after_seq === null || page.next_after_seq === undefined) {
        break;
      }
      after = page.next_after_seq;
    }
    page.events = events;
    return page;
  }

  function subjectCard(subject, timeline) {
    const state = subject.gone ? "gone" : subject.terminating ? "terminating" : "alive";
    const later = subject.same_name.slice(subject.same_name.indexOf(subject.uid) + 1);
    const earlier = subject.same_name.slice(0, subject.same_name.indexOf(subject.uid));
    const card = el(
      "section",
      { class: "card subject", "data-uid": subject.uid, "data-kind": subject.kind },
      el("h2", {}, el("span", { class: "kind", text: subject.kind }), " " + subject.namespace + "/" + subject.name,
        el("span", { class: "badge state-" + state, text: state })),
      el("dl", {},
        el("dt", { text: "uid" }), el("dd", { class: "mono", text: subject.uid }),
        el("dt", { text: "recorded" }), el("dd", {}, "seqs ", entryLink(subject.first_seq), " .. ", entryLink(subject.last_seq)),
        el("dt", { text: "controller" }), el("dd", {}, subject.controller ? objectLink(subject.controller) : "none"),
        earlier.length ? [el("dt", { text: "same name before" }), el("dd", {}, ...earlier.map((uid) => el("a", { class: "obj mono", href: objectHref(subject.kind, uid), "data-role": "predecessor", text: uid })))] : null,
        later.length ? [el("dt", { text: "same name after" }), el("dd", {}, ...later.map((uid) => el("a", { class: "obj mono", href: objectHref(subject.kind, uid), "data-role": "successor", text: uid + " (replacement)" })))] : null
      )
    );
    if (subject.bindings.length) {
      const rows = subject.bindings.map((b) =>
        el("tr", { "data-since": b.since_seq },
          el("td", { text: b.kind }),
          el("td", {}, objectLink(b.sandbox)),
          el("td", {}, b.claim ? objectLink(b.claim) : "-"),
          el("td", { class: "mono", text: b.sandbox_id || "-" }),
          el("td", {}, entryLink(b.since_seq), " " + timeText(b.since)),
          el("td", {}, b.ended_seq ? entryLink(b.ended_seq) : el("span", { class: "badge state-alive", text: "active" })),
          el("td", { text: b.mutated ? "identity mutated" : "" })
        )
      );
      card.append(
        el("h3", { text: "Bindings" }),
        el("table", { class: "grid" },
          el("thead", {}, el("tr", {}, ...["kind", "Sandbox", "claim", "sandbox id", "since", "ended", ""].map((h) => el("th", { text: h })))),
          el("tbody", {}, rows))
      );
    }
    return card;
  }

  // A horizontal time axis: each event a dot at its time, coloured by what happened.
  function timeAxis(events) {
    const times = events.map((e) => Date.parse(e.at));
    const first = Math.min(...times);
    const last = Math.max(...times);
    const span = Math.max(1, last - first);
    const axis = el("div", { class: "axis", "aria-hidden": "true" });
    events.forEach((event, index) => {
      const dot = el("a", { class: "dot ev-" + event.event, href: "#ev-" + index, title: timeText(event.at) + " " + event.event + (event.reason ? " " + event.reason : "") });
      dot.style.left = (2 + 96 * ((times[index] - first) / span)).toFixed(2) + "%";
      axis.append(dot);
    });
    axis.append(
      el("span", { class: "axis-label left", text: timeText(new Date(first).toISOString()) }),
      el("span", { class: "axis-label right", text: timeText(new Date(last).toISOString()) })
    );
    return axis;
  }

  function eventItem(event, index, single) {
    const links = event.links.filter((link) => !(single && link.uid === event.subject));
    return el(
      "li",
      {
        class: "event ev-" + event.event,
        id: "ev-" + index,
        "data-event": event.event,
        "data-seq": event.seq,
        "data-reason": event.reason || "",
      },
      el("div", { class: "when" }, el("time", { text: timeText(event.at) })),
      el("div", { class: "what" },
        el("div", { class: "head" },
          el("span", { class: "label", text: event.event.replace(/_/g, " ") }),
          event.reason ? el("span", { class: "badge reason", "data-reason": event.reason, text: event.reason }) : null,
          event.count ? el("span", { class: "badge count", text: "×" + event.count }) : null,
          el("span", { class: "spacer" }),
          entryLink(event.seq, event.hash),
          el("a", { class: "asof", href: query({ view: "state", as_of_seq: event.seq }), title: "the state right after this entry", text: "state here" })
        ),
        el("p", { class: "summary", text: event.summary }),
        !single && event.subject ? el("p", { class: "muted mono", text: "uid " + event.subject }) : null,
        links.length ? el("div", { class: "links" }, ...links.map(objectLink)) : null
      )
    );
  }

  async function renderTimeline(selector) {
    setState("loading");
    const [timeline, integrity] = await Promise.all([loadTimeline(selector), renderIntegrity()]);
    // A uid of unknown kind: from now on, the canonical link of its kind.
    if (selector.uid && timeline.subjects.length === 1) {
      const canonical = objectHref(timeline.subjects[0].kind, timeline.subjects[0].uid);
      if (canonical) {
        history.replaceState(null, "", canonical);
      }
    }
    const children = [];
    if (!timeline.subjects.length) {
      children.push(el("section", { class: "card" }, el("h2", { text: "Nothing recorded" }),
        el("p", { text: "The ledger never recorded an object under " + Object.entries(selector).map(([k, v]) => k + "=" + v).join(", ") + "." })));
      main.replaceChildren(...children);
      setState("ready");
      return;
    }
    document.title = "claim-ledger — " + timeline.subjects.map((s) => s.kind + " " + s.name).join(", ");
    children.push(...timeline.subjects.map((s) => subjectCard(s, timeline)));
    const single = timeline.subjects.length === 1;
    const events = timeline.events;
    const section = el("section", { class: "card timeline" },
      el("h3", { text: "Timeline (" + events.length + " events)" }));
    if (events.length) {
      section.append(timeAxis(events));
      section.append(el("ol", { class: "events", id: "events" }, ...events.map((e, i) => eventItem(e, i, single))));
      const from = Math.min(...events.map((e) => e.seq));
      const to = Math.max(...events.map((e) => e.seq));
      section.append(bundlePanel(integrity, from, to));
    }
    if (timeline.gap_scan && !timeline.gap_scan.complete) {
      section.append(el("p", { class: "muted", text: "Watch gaps were searched in seqs " + timeline.gap_scan.from_seq + ".." + timeline.gap_scan.to_seq + " only." }));
    }
    children.push(section);
    main.replaceChildren(...children);
    setState("ready");
    const uids = new Set(timeline.subjects.map((s) => s.uid));
    onNewEntries = (entries) => {
      if (entries.some((line) => mentions(line.entry, uids) || line.entry.change.watch_gap)) {
        renderTimeline(selector).catch(report);
      }
    };
  }

  // Whether an entry records one of these uids or names it (transitions, denied checks).
  function mentions(entry, uids) {
    const change = entry.change;
    const found = (value) => typeof value === "string" && uids.has(value);
    if (change.object && found(change.object.uid)) {
      return true;
    }
    if (change.check_denied && found(change.check_denied.pod_uid)) {
      return true;
    }
    return entry.transitions.some((t) => Object.entries(t).some(([key, value]) => key.endsWith("uid") && found(value)));
  }

  // ---------------------------------------------------------------- state as of

  function objectKey(o) {
    return o.uid;
  }

  function bindingKey(b) {
    return b.pod.uid + "/" + b.since_seq;
  }

  function bindingRow(b, mark) {
    const pod = { role: "pod", kind: "Pod", uid: b.pod.uid, namespace: b.pod.namespace, name: b.pod.name };
    const sandbox = { role: "sandbox", kind: "Sandbox", uid: b.sandbox.uid, namespace: b.sandbox.namespace, name: b.sandbox.name };
    const claim = b.claim ? { role: "claim", kind: "SandboxClaim", uid: b.claim.uid, namespace: b.claim.namespace, name: b.claim.name } : null;
    return el("tr", { class: mark ? "mark-" + mark : "", "data-pod-uid": b.pod.uid },
      el("td", { text: b.kind }),
      el("td", {}, objectLink(pod)),
      el("td", { class: "mono", text: b.pod.uid }),
      el("td", {}, objectLink(sandbox)),
      el("td", {}, claim ? objectLink(claim) : "-"),
      el("td", { class: "mono", text: b.sandbox_id || "-" }),
      el("td", {}, entryLink(b.since_seq)),
      mark ? el("td", { text: mark }) : null
    );
  }

  function objectRow(o, mark) {
    const link = { role: "object", kind: o.kind, uid: o.uid, namespace: o.namespace, name: o.name };
    return el("tr", { class: mark ? "mark-" + mark : "" },
      el("td", { text: o.kind }),
      el("td", {}, objectLink(link)),
      el("td", { class: "mono", text: o.uid }),
      el("td", { text: o.controller || "-" }),
      el("td", { text: o.terminating ? "terminating" : "" }),
      el("td", {}, entryLink(o.last_seq)),
      mark ? el("td", { text: mark }) : null
    );
  }

  function grid(headers, rows, id) {
    return el("table", { class: "grid", id },
      el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { class: "muted", colSpan: headers.length, text: "none" }))));
  }

  async function renderState(params) {
    setState("loading");
    const asOfSeq = params.get("as_of_seq");
    const asOf = params.get("as_of");
    const form = el("form", { class: "asof-form", id: "asof-form" },
      el("label", {}, "as of seq ", el("input", { id: "asof-seq", name: "as_of_seq", type: "number", min: "0", value: asOfSeq || "" })),
      el("label", {}, " or time ", el("input", { id: "asof-time", name: "as_of", type: "text", placeholder: "2026-05-20T15:00:00Z", value: asOf || "" })),
      el("button", { type: "submit", text: "Show" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const seq = document.getElementById("asof-seq").value.trim();
      const time = document.getElementById("asof-time").value.trim();
      location.href = query({ view: "state", as_of_seq: seq || null, as_of: seq ? null : time || null });
    });
    const [then, now] = await Promise.all([
      api("/v1/state" + query({ as_of_seq: asOfSeq, as_of: asOfSeq ? null : asOf })),
      api("/v1/state"),
      renderIntegrity(),
    ]);
    const title = asOfSeq || asOf ? "State as of seq " + then.seq + " (" + timeText(then.at) + ")" : "State now: seq " + then.seq + " (" + timeText(then.at) + ")";
    const children = [el("section", { class: "card" }, el("h2", { id: "state-title", "data-seq": then.seq, text: title }), form)];
    children.push(el("section", { class: "card" }, el("h3", { text: "Active bindings (" + then.bindings.length + ")" }),
      grid(["kind", "pod", "pod uid", "Sandbox", "claim", "sandbox id", "since"], then.bindings.map((b) => bindingRow(b)), "bindings")));
    if (now.seq !== then.seq) {
      const nowBindings = new Map(now.bindings.map((b) => [bindingKey(b), b]));
      const thenBindings = new Map(then.bindings.map((b) => [bindingKey(b), b]));
      const nowObjects = new Map(now.objects.map((o) => [objectKey(o), o]));
      const thenObjects = new Map(then.objects.map((o) => [objectKey(o), o]));
      const changed = [
        ...then.bindings.filter((b) => !nowBindings.has(bindingKey(b))).map((b) => bindingRow(b, "ended since")),
        ...now.bindings.filter((b) => !thenBindings.has(bindingKey(b))).map((b) => bindingRow(b, "formed since")),
      ];
      const objects = [
        ...then.objects.filter((o) => !nowObjects.has(objectKey(o))).map((o) => objectRow(o, "gone since")),
        ...now.objects.filter((o) => !thenObjects.has(objectKey(o))).map((o) => objectRow(o, "new since")),
        ...now.objects.filter((o) => thenObjects.has(objectKey(o)) && thenObjects.get(objectKey(o)).last_seq !== o.last_seq).map((o) => objectRow(o, "changed since")),
      ];
      children.push(el("section", { class: "card", id: "since" },
        el("h3", { text: "What changed between seq " + then.seq + " and the head (seq " + now.seq + ")" }),
        grid(["kind", "pod", "pod uid", "Sandbox", "claim", "sandbox id", "since", ""], changed, "bindings-since"),
        grid(["kind", "object", "uid", "controller", "", "last seq", ""], objects, "objects-since")));
    }
    children.push(el("section", { class: "card" }, el("h3", { text: "Live objects (" + then.objects.length + ")" }),
      grid(["kind", "object", "uid", "controller", "", "last seq"], then.objects.map((o) => objectRow(o)), "objects")));
    main.replaceChildren(...children);
    setState("ready");
    if (!asOfSeq && !asOf) {
      onNewEntries = () => renderState(params).catch(report);
    }
  }

  // ---------------------------------------------------------------- one entry

  async function renderEntry(seq) {
    setState("loading");
    const number = Number(seq);
    if (!Number.isInteger(number) || number < 1) {
      throw new HttpError(400, "invalid_query", "entry must be a seq, 1 or more");
    }
    const [page] = await Promise.all([api("/v1/entries" + query({ after_seq: number - 1, limit: 1 })), renderIntegrity()]);
    const line = page.entries[0];
    if (!line || line.seq !== number) {
      throw new HttpError(404, "out_of_range", "the ledger holds no entry " + number + " (head " + page.head_seq + ")");
    }
    const change = line.entry.change;
    const related = [];
    if (change.object) {
      related.push({ role: "object", kind: change.object.kind, uid: change.object.uid, namespace: change.object.namespace, name: change.object.name });
    }
    if (change.check_denied) {
      related.push({ role: "pod", kind: "Pod", uid: change.check_denied.pod_uid, namespace: change.check_denied.namespace, name: change.check_denied.pod_name });
    }
    const proof = el("pre", { class: "json", id: "proof" });
    const proofButton = el("button", { type: "button", text: "Inclusion proof in the current tree" });
    proofButton.addEventListener("click", async () => {
      try {
        proof.textContent = JSON.stringify(await api("/v1/proof/inclusion" + query({ seq: number })), null, 2);
      } catch (error) {
        proof.textContent = error.message;
      }
    });
    main.replaceChildren(
      el("section", { class: "card", id: "entry", "data-seq": line.seq },
        el("h2", { text: "Entry " + line.seq }),
        el("dl", {},
          el("dt", { text: "observed" }), el("dd", { text: timeText(line.entry.observed_at) }),
          el("dt", { text: "hash" }), el("dd", { class: "mono", text: line.hash }),
          el("dt", { text: "prev hash" }), el("dd", { class: "mono", text: line.prev_hash }),
          el("dt", { text: "Merkle leaf" }), el("dd", { text: String(line.leaf_index) }),
          el("dt", { text: "stored bytes" }), el("dd", { text: Math.floor((line.bytes.length * 3) / 4) + " bytes (base64 in the export)" }),
          el("dt", { text: "timelines" }), el("dd", {}, related.length ? related.map(objectLink) : "-")),
        el("div", { class: "links" },
          line.seq > 1 ? el("a", { href: query({ entry: line.seq - 1 }), text: "← entry " + (line.seq - 1) }) : null,
          line.seq < page.head_seq ? el("a", { href: query({ entry: line.seq + 1 }), text: "entry " + (line.seq + 1) + " →" }) : null,
          el("a", { href: query({ view: "state", as_of_seq: line.seq }), text: "state right after it" })),
        el("h3", { text: "Decoded entry" }),
        el("pre", { class: "json", text: JSON.stringify(line.entry, null, 2) }),
        proofButton,
        proof)
    );
    setState("ready");
  }

  // ---------------------------------------------------------------- live entries

  function entryRow(line) {
    const change = line.entry.change;
    let what = Object.keys(change)[0];
    let object = null;
    let reason = "";
    if (change.object) {
      what = change.object.change;
      object = objectLink({ role: "object", kind: change.object.kind, uid: change.object.uid, namespace: change.object.namespace, name: change.object.name });
    } else if (change.check_denied) {
      reason = change.check_denied.reason;
      object = objectLink({ role: "pod", kind: "Pod", uid: change.check_denied.pod_uid, namespace: change.check_denied.namespace, name: change.check_denied.pod_name });
    } else if (change.watch_gap) {
      object = change.watch_gap.resource;
    }
    const transitions = line.entry.transitions.map((t) => t.transition + (t.reason ? " " + t.reason : "")).join(", ");
    return el("tr", { "data-seq": line.seq },
      el("td", {}, entryLink(line.seq, line.hash)),
      el("td", { text: timeText(line.entry.observed_at) }),
      el("td", { text: what }),
      el("td", {}, object || "-"),
      el("td", { text: [reason, transitions].filter(Boolean).join(" ") }));
  }

  async function renderLive() {
    setState("loading");
    const integrity = await renderIntegrity();
    const head = integrity.head.seq;
    const page = await api("/v1/entries" + query({ after_seq: Math.max(0, head - 50), limit: 50 }));
    const body = el("tbody", { id: "live-entries" }, ...page.entries.slice().reverse().map(entryRow));
    main.replaceChildren(
      el("section", { class: "card" },
        el("h2", { text: "Live entries" }),
        el("p", { class: "muted", text: "The newest entries first; new ones appear as the ledger appends them." }),
        el("table", { class: "grid" },
          el("thead", {}, el("tr", {}, ...["entry", "observed", "change", "object", "transitions"].map((h) => el("th", { text: h })))),
          body))
    );
    setState("ready");
    onNewEntries = (entries) => {
      for (const line of entries) {
        body.prepend(entryRow(line));
      }
    };
  }

  // ---------------------------------------------------------------- search

  document.getElementById("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = document.getElementById("query").value.trim();
    if (text === "") {
      return;
    }
    const parts = text.split("/");
    if (parts.length === 3 && parts.every((p) => p !== "")) {
      const aliases = { pvc: "PersistentVolumeClaim", claim: "SandboxClaim", sandboxclaim: "SandboxClaim", sandbox: "Sandbox", pod: "Pod" };
      const kind = aliases[parts[0].toLowerCase()] || parts[0];
      location.href = query({ kind, namespace: parts[1], name: parts[2] });
    } else if (/^\d+$/.test(text)) {
      location.href = query({ entry: text });
    } else {
      location.href = query({ uid: text });
    }
  });

  // ---------------------------------------------------------------- polling

  // New entries, every two seconds, from /v1/entries (an EventSource could not carry the
  // bearer token); the current view decides what to redraw.
  async function poll() {
    try {
      if (lastSeenSeq === null) {
        const head = Number(integrityBox.dataset.headSeq);
        lastSeenSeq = Number.isFinite(head) ? head : 0;
      }
      const page = await api("/v1/entries" + query({ after_seq: lastSeenSeq, limit: 1000 }));
      liveDot.classList.add("on");
      if (page.entries.length) {
        lastSeenSeq = page.entries[page.entries.length - 1].seq;
        liveDot.classList.add("blink");
        setTimeout(() => liveDot.classList.remove("blink"), 600);
        renderIntegrity().catch(() => {});
        if (onNewEntries) {
          onNewEntries(page.entries);
        }
      }
    } catch (error) {
      liveDot.classList.remove("on");
    }
    if (pollTimer !== null) {
      pollTimer = setTimeout(poll, POLL_MS);
    }
  }

  function startPolling() {
    pollTimer = setTimeout(poll, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer !== null) {
      clearTimeout(pollTimer);
    }
    pollTimer = null;
  }

  function report(error) {
    setState("error");
    if (error instanceof HttpError && error.status === 401) {
      return; // already shown, with the sign-in form
    }
    showError(error instanceof HttpError ? error.code + ": " + error.message : "The page failed: " + error.message);
  }

  // ---------------------------------------------------------------- start

  async function start() {
    takeTokenFromFragment();
    if (!token()) {
      setState("signin");
      showSignIn();
      return;
    }
    clearError();
    const params = new URLSearchParams(location.search);
    const selector = selectorFrom(params);
    document.getElementById("query").value = selector ? Object.values(selector).join("/") : "";
    try {
      if (selector) {
        await renderTimeline(selector);
      } else if (params.get("entry")) {
        await renderEntry(params.get("entry"));
      } else if (params.get("view") === "state") {
        await renderState(params);
      } else {
        await renderLive();
      }
      startPolling();
    } catch (error) {
      report(error);
    }
  }

  start();
})();
