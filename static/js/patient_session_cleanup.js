/*
 * Patient session cleanup for the NCP demo portal (plain JavaScript, no build step).
 *
 * Commands go over the session socket (/ws/patient-session/, docs/events.md) when it is open
 * and over the CSRF-protected HTTP API when it is not. The socket reconnects with backoff and
 * jitter and asks for the session's state after each reconnect; while it is down, a passive
 * status poll keeps the page in step. Tabs of one browser tell each other at once through a
 * BroadcastChannel.
 *
 * Deliberately absent: wiping on beforeunload/unload/visibilitychange (they fire on every link,
 * form submit and reload). Whether a tab was really closed is the server's presence rule. The
 * one page-side timer is PATIENT_HIDDEN_TIMEOUT (off by default): a tab hidden that long, while
 * no other tab of the portal is visible, clears the patient data (reason "tab_hidden").
 *
 * API (the design document's, kept exactly):
 *   window.clearPatientSession()            -> Promise of {success, items_cleared}
 *   window.emergencySessionCleanup()        -> Promise; then the sign-in page
 *   window.patientSessionCleanup.manualCleanup() / .emergencyCleanup()
 *   window.patientSessionCleanup.disable() / .enable()   shortcuts and page timers off / on
 *   document "patientSessionCleared" event, detail {reason, source, items_cleared}, once for
 *   every cleanup of this session, whatever tab or trigger caused it.
 */
(function () {
  "use strict";

  if (window.patientSessionCleanup) {
    return; // loaded twice: keep the first instance and its timers
  }

  const DEFAULTS = {
    clearUrl: "/api/clear-patient-session/",
    emergencyUrl: "/api/emergency-session-cleanup/",
    statusUrl: "/api/session-status/",
    activityUrl: "/",
    loginUrl: "/accounts/login/",
    socketUrl: "",
    hiddenTimeout: "0",
    timeoutWarning: "60",
    noticeCookie: "patient_notice",
  };
  const POLL_INTERVAL_MS = 15000;
  const TICK_INTERVAL_MS = 1000;
  // Two warnings whose deadlines lie closer than this are the same warning (the page's own
  // timer and the server's frame, each with its own rounding and delivery).
  const SAME_DEADLINE_MS = 2000;
  const ACTIVITY_INTERVAL_MS = 10000;
  const REPLY_TIMEOUT_MS = 5000;
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const SAME_CLEANUP_MS = 5000;
  const VISIBLE_TAB_ANSWER_MS = 400;
  const CLOSE_ENDED = new Set([4001, 4003]);
  const CLOSE_POLICY = 4008;
  const CLEARED = "cleared";
  const FIELD_TAGS = new Set(["INPUT", "SELECT", "TEXTAREA"]);
  const CONNECTION_TEXT = {
    connecting: "connecting",
    live: "live",
    reconnecting: "reconnecting",
    polling: "checking every 15 s",
    offline: "offline",
    ended: "signed out",
  };

  const state = {
    enabled: true,
    ended: false,
    busy: false,
    connection: "connecting",
    socket: null,
    attempts: 0,
    retryTimer: null,
    pollTimer: null,
    tickTimer: null,
    nextId: 1,
    pending: new Map(),
    status: null,
    lastActivitySent: 0,
    lastCleanup: { key: "", at: 0 },
    hiddenSince: null,
    hiddenTimer: null,
    warning: null,
    warningTimer: null,
    // The deadline of the warning the user dismissed: the server's copy of that warning,
    // arriving after the page's own, does not open it again.
    dismissed: null,
    channel: null,
    tabId: Math.random().toString(36).slice(2),
  };

  /* ---- settings and small helpers ---- */

  function widget() {
    return document.querySelector("[data-patient-session-cleanup]");
  }

  function find(selector) {
    const root = widget();
    return root ? root.querySelector(selector) : null;
  }

  function setting(name) {
    const root = widget();
    const value = root ? root.dataset[name] : undefined;
    return value !== undefined ? value : DEFAULTS[name];
  }

  function seconds(name) {
    const value = parseFloat(setting(name));
    return Number.isFinite(value) && value > 0 ? value : 0;
  }

  let reasonTexts = null;
  function reasonText(reason) {
    if (reasonTexts === null) {
      const script = document.getElementById("patient-session-reasons");
      reasonTexts = script ? JSON.parse(script.textContent) : {};
    }
    return reasonTexts[reason] || "Patient data cleared by the server";
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) {
      return decodeURIComponent(match[1]);
    }
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function itemsText(count) {
    return count + (count === 1 ? " item" : " items");
  }

  function formatDuration(value) {
    const total = Math.max(0, Math.round(value));
    const minutes = Math.floor(total / 60);
    return minutes ? minutes + " min " + (total % 60) + " s" : total + " s";
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function sessionEndedError() {
    return new Error("The session has ended; sign in again to continue.");
  }

  /* ---- HTTP ---- */

  async function readJson(response) {
    try {
      return await response.json();
    } catch (error) {
      return null;
    }
  }

  async function postHttp(url, headers) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: Object.assign(
          { Accept: "application/json", "X-CSRFToken": csrfToken() },
          headers
        ),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (error) {
      throw new Error("The server could not be reached: the patient data may still be held.");
    }
    const body = await readJson(response);
    if (!response.ok || !body || body.success !== true) {
      const error = new Error(
        (body && body.message) || "The cleanup failed (HTTP " + response.status + ")."
      );
      error.status = response.status;
      error.detail = body;
      throw error;
    }
    return body;
  }

  async function fetchStatus() {
    // "passive": this poll never counts as user activity on the server.
    const response = await fetch(setting("statusUrl"), {
      headers: { Accept: "application/json", "X-Patient-Activity": "passive" },
      credentials: "same-origin",
      cache: "no-store",
    });
    const body = await readJson(response);
    if (!response.ok || !body) {
      throw new Error("HTTP " + response.status);
    }
    return body;
  }

  /* ---- the socket ---- */

  function socketOpen() {
    return state.socket !== null && state.socket.readyState === WebSocket.OPEN;
  }

  function connect() {
    const path = setting("socketUrl");
    if (!path || state.ended || state.socket !== null) {
      return;
    }
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + path);
    state.socket = socket;
    socket.addEventListener("open", function () {
      state.attempts = 0;
      setConnection("live");
      stopPolling();
      send({ type: "status" });
    });
    socket.addEventListener("message", function (message) {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      onFrame(frame);
    });
    socket.addEventListener("close", function (event) {
      onSocketClosed(socket, event.code);
    });
  }

  function onSocketClosed(socket, code) {
    if (state.socket !== socket) {
      return;
    }
    state.socket = null;
    state.pending.forEach(function (entry) {
      entry.reject(Object.assign(new Error("The connection closed."), { transport: true }));
    });
    state.pending.clear();
    if (state.ended) {
      return;
    }
    if (CLOSE_ENDED.has(code)) {
      onEnded({ reason: null, source: "socket", items_cleared: null });
      return;
    }
    startPolling();
    if (code === CLOSE_POLICY) {
      setConnection("offline");
      return;
    }
    // A socket that was live is being re-established; one that never opened means offline.
    setConnection(state.connection === "live" ? "reconnecting" : "offline");
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, state.attempts));
    state.attempts += 1;
    // Full jitter over the upper half: tabs of a restarted server do not return in step.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    state.retryTimer = window.setTimeout(function () {
      state.retryTimer = null;
      connect();
    }, delay);
  }

  function send(frame) {
    if (socketOpen()) {
      state.socket.send(JSON.stringify(frame));
    }
  }

  function request(type) {
    return new Promise(function (resolve, reject) {
      const id = state.nextId++;
      const timer = window.setTimeout(function () {
        state.pending.delete(id);
        reject(Object.assign(new Error("No reply from the server."), { transport: true }));
      }, REPLY_TIMEOUT_MS);
      state.pending.set(id, {
        resolve: function (frame) {
          window.clearTimeout(timer);
          resolve(frame);
        },
        reject: function (error) {
          window.clearTimeout(timer);
          reject(error);
        },
      });
      send({ type: type, id: id });
    });
  }

  // Over the socket when it is open; over HTTP when it is not or when it drops meanwhile.
  async function command(type, overHttp) {
    if (type && socketOpen()) {
      try {
        return await request(type);
      } catch (error) {
        if (!error.transport) {
          throw error;
        }
      }
    }
    return overHttp();
  }

  function settle(frame) {
    const entry = state.pending.get(frame.id);
    if (!entry) {
      return;
    }
    state.pending.delete(frame.id);
    if (frame.type === "reply") {
      entry.resolve(frame);
    } else {
      entry.reject(new Error(frame.message || "The server refused the command."));
    }
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "session.state":
        applyStatus({
          authenticated: frame.authenticated,
          hasPatientData: frame.has_patient_data,
          items: frame.items,
          idleLeft: frame.idle_seconds_left,
          sessionLeft: frame.session_seconds_left,
          warning: frame.warning_seconds,
          lastActivity:
            frame.has_patient_data && frame.timeout_seconds
              ? Date.now() - (frame.timeout_seconds - frame.idle_seconds_left) * 1000
              : null,
        });
        break;
      case "session.activity":
        noteActivity(frame.idle_seconds_left);
        break;
      case "session.timeout_warning":
        openWarning(frame.seconds_left, frame.reason);
        break;
      case "session.cleared":
        if (frame.activity) {
          noteActivity(null); // the request that cleared was activity too (an HTTP cleanup)
        }
        onCleared(detailOf(frame));
        break;
      case "session.ended":
        onEnded(detailOf(frame));
        break;
      case "reply":
      case "error":
        settle(frame);
        break;
      default:
        break;
    }
  }

  function detailOf(frame) {
    return { reason: frame.reason, source: frame.source, items_cleared: frame.items_cleared };
  }

  /* ---- the passive status poll (while the socket is not open) ---- */

  async function refreshStatus() {
    if (state.ended) {
      return;
    }
    if (socketOpen()) {
      send({ type: "status" });
      return;
    }
    try {
      const body = await fetchStatus();
      const idle = body.idle_seconds || 0;
      applyStatus({
        authenticated: body.authenticated,
        hasPatientData: body.has_patient_data,
        items: body.items,
        idleLeft: body.seconds_until_timeout,
        sessionLeft: body.max_inactive_seconds ? body.max_inactive_seconds - idle : null,
        lastActivity: Date.now() - idle * 1000,
      });
      if (state.connection === "offline" && !setting("socketUrl")) {
        setConnection("polling");
      }
    } catch (error) {
      setConnection("offline");
      setPart("items", "status unavailable");
    }
  }

  function startPolling() {
    if (state.pollTimer !== null || state.ended || document.hidden) {
      return;
    }
    refreshStatus();
    state.pollTimer = window.setInterval(refreshStatus, POLL_INTERVAL_MS);
  }

  function stopPolling() {
    window.clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  /* ---- what the server says about the session ---- */

  function applyStatus(next) {
    if (state.busy) {
      return; // this page's own cleanup is under way: its outcome decides
    }
    if (!next.authenticated) {
      onEnded({ reason: null, source: "status", items_cleared: null });
      return;
    }
    const previous = state.status;
    state.status = Object.assign({}, next, { at: Date.now() });
    if (next.lastActivity === null) {
      state.status.lastActivity = previous ? previous.lastActivity : null;
    }
    if (!next.hasPatientData && showsPatientData()) {
      // Cleared while this page was not told (e.g. its socket was down).
      onCleared({ reason: null, source: "status", items_cleared: null });
      return;
    }
    if (previous && previous.hasPatientData !== next.hasPatientData) {
      announce(next.hasPatientData ? "Patient data held." : "No patient data held.");
    }
    scheduleWarning();
    render();
  }

  /* ---- the activity monitor: a clock on screen, state changes announced ---- */

  function setPart(name, text) {
    const part = find('[data-monitor="' + name + '"]');
    if (part && part.textContent !== text) {
      part.textContent = text;
    }
  }

  function announce(text) {
    const region = find("[data-monitor-announcer]");
    if (region) {
      region.textContent = text;
    }
  }

  function setConnection(connection) {
    if (state.connection === connection) {
      return;
    }
    state.connection = connection;
    setPart("connection", CONNECTION_TEXT[connection]);
    announce("Session updates: " + CONNECTION_TEXT[connection] + ".");
  }

  function leftNow(value) {
    if (value === null || value === undefined || !state.status) {
      return null;
    }
    return value - (Date.now() - state.status.at) / 1000;
  }

  function render() {
    setPart("connection", CONNECTION_TEXT[state.connection]);
    const status = state.status;
    if (state.ended || !status) {
      return;
    }
    setPart(
      "items",
      status.hasPatientData ? itemsText(status.items) + " of patient data held" : "no patient data held"
    );
    const idleLeft = leftNow(status.idleLeft);
    const sessionLeft = leftNow(status.sessionLeft);
    if (status.hasPatientData && idleLeft !== null) {
      setPart("idle", "clears in " + formatDuration(idleLeft));
    } else if (sessionLeft !== null) {
      setPart("idle", "session ends in " + formatDuration(sessionLeft));
    } else {
      setPart("idle", "");
    }
    setPart("last", status.lastActivity ? "last activity " + clock(status.lastActivity) : "");
  }

  /* ---- the page: blanking, messages, the ended state ---- */

  function isField(element) {
    return FIELD_TAGS.has(element.tagName);
  }

  // What the server rendered counts, not what the clinician is typing into a search field.
  function renderedValue(el) {
    if (el.tagName === "SELECT") {
      return Array.from(el.options).some(function (option) {
        return option.defaultSelected && option.value !== "";
      });
    }
    return el.defaultValue !== "";
  }

  function showsPatientData() {
    return Array.from(document.querySelectorAll("[data-patient-data]")).some(function (el) {
      if (el.getAttribute("data-patient-data") === CLEARED) {
        return false;
      }
      return isField(el) ? renderedValue(el) : true;
    });
  }

  function blankPatientData(text) {
    const focused = document.activeElement;
    // Focus on no control (the page or its main region) or inside what is removed is lost.
    let focusLost = focused === null || focused === document.body || focused.id === "main";
    document.querySelectorAll("[data-patient-data]").forEach(function (el) {
      if (isField(el)) {
        el.value = "";
        el.defaultValue = "";
        return;
      }
      if (el.contains(focused)) {
        focusLost = true;
      }
      const notice = document.createElement("div");
      notice.className = "alert alert-secondary";
      notice.textContent = text;
      el.replaceChildren(notice);
      el.setAttribute("data-patient-data", CLEARED);
    });
    return focusLost;
  }

  function showMessage(text, level) {
    const area = find("[data-session-messages]");
    if (!area) {
      return null;
    }
    const alert = document.createElement("div");
    alert.className = "alert alert-" + level + " py-2";
    alert.setAttribute("role", level === "danger" ? "alert" : "status");
    alert.tabIndex = -1;
    alert.textContent = text;
    area.replaceChildren(alert);
    return alert;
  }

  function dispatch(detail) {
    const event = { reason: detail.reason, source: detail.source, items_cleared: detail.items_cleared };
    document.dispatchEvent(new CustomEvent("patientSessionCleared", { detail: event }));
  }

  function sameAsLast(detail) {
    const key = [detail.reason, detail.source, detail.items_cleared].join("|");
    const now = Date.now();
    const same = state.lastCleanup.key === key && now - state.lastCleanup.at < SAME_CLEANUP_MS;
    state.lastCleanup = { key: key, at: now };
    return same;
  }

  function clearedText(detail) {
    const sentence = detail.reason ? reasonText(detail.reason) : "Patient data cleared by the server";
    if (detail.items_cleared === null || detail.items_cleared === undefined) {
      return sentence + ".";
    }
    if (detail.items_cleared === 0) {
      return "No patient data was held: nothing to clear.";
    }
    return sentence + " (" + itemsText(detail.items_cleared) + ").";
  }

  function forgetNotice() {
    // This page has said it; the next one need not say it again.
    document.cookie = setting("noticeCookie") + "=; Max-Age=0; path=/; SameSite=Lax";
  }

  function leaveNotice(reason) {
    if (reason) {
      const value = reason + "." + Math.floor(Date.now() / 1000);
      document.cookie = setting("noticeCookie") + "=" + value + "; Max-Age=600; path=/; SameSite=Lax";
    }
  }

  // Activity was recorded for the session (any tab, any process): the deadlines moved later.
  function noteActivity(idleLeft) {
    if (state.status) {
      state.status.at = Date.now();
      state.status.idleLeft = state.status.hasPatientData ? idleLeft : null;
      state.status.lastActivity = Date.now();
    }
    closeWarning();
    scheduleWarning();
    render();
  }

  function onCleared(detail, fromOtherTab) {
    if (state.ended || sameAsLast(detail)) {
      return;
    }
    const focusLost = blankPatientData(clearedText(detail) + " Search again to continue.");
    const message = showMessage(clearedText(detail), "success");
    if (state.status) {
      state.status.hasPatientData = false;
      state.status.items = 0;
      state.status.idleLeft = null;
    }
    closeWarning();
    render();
    announce("No patient data held.");
    forgetNotice();
    if (!fromOtherTab) {
      broadcast({ type: "cleared", detail: detail });
    }
    if (focusLost && message) {
      message.focus();
    }
    dispatch(detail);
  }

  function onEnded(detail, fromOtherTab) {
    if (state.ended) {
      return;
    }
    state.ended = true;
    window.clearTimeout(state.retryTimer);
    window.clearTimeout(state.hiddenTimer);
    stopPolling();
    window.clearInterval(state.tickTimer);
    closeWarning();
    if (state.socket !== null) {
      state.socket.close(1000);
      state.socket = null;
    }
    const sentence = detail.reason ? reasonText(detail.reason) + "." : "You are signed out.";
    blankPatientData("The session has ended. " + sentence);
    // Nothing may look as if it still acted for this session.
    document.querySelectorAll("[data-session-controls], [data-signed-in-only]").forEach(
      function (element) {
        element.hidden = true;
      }
    );
    const messages = find("[data-session-messages]");
    if (messages) {
      messages.replaceChildren();
    }
    const banner = find("[data-session-ended]");
    if (banner) {
      banner.querySelector("[data-session-ended-reason]").textContent = sentence;
      banner.hidden = false;
      banner.focus();
    }
    state.connection = "ended";
    announce("Your session has ended.");
    if (!fromOtherTab) {
      broadcast({ type: "ended", detail: detail });
    }
    dispatch(detail);
  }

  /* ---- tabs of this browser ---- */

  function openChannel() {
    if (typeof BroadcastChannel !== "function") {
      return;
    }
    state.channel = new BroadcastChannel("patient-session");
    state.channel.addEventListener("message", function (message) {
      const data = message.data || {};
      if (data.type === "cleared") {
        onCleared(data.detail, true);
      } else if (data.type === "ended") {
        onEnded(data.detail, true);
      } else if (data.type === "activity") {
        closeWarning();
      } else if (data.type === "visible?" && !document.hidden) {
        broadcast({ type: "visible!", to: data.from });
      }
    });
  }

  function broadcast(message) {
    if (state.channel !== null) {
      state.channel.postMessage(Object.assign({ from: state.tabId }, message));
    }
  }

  function anotherTabVisible() {
    if (state.channel === null) {
      return Promise.resolve(false);
    }
    return new Promise(function (resolve) {
      const listener = function (message) {
        if (message.data && message.data.type === "visible!" && message.data.to === state.tabId) {
          done(true);
        }
      };
      const timer = window.setTimeout(function () {
        done(false);
      }, VISIBLE_TAB_ANSWER_MS);
      function done(visible) {
        window.clearTimeout(timer);
        state.channel.removeEventListener("message", listener);
        resolve(visible);
      }
      state.channel.addEventListener("message", listener);
      broadcast({ type: "visible?" });
    });
  }

  /* ---- user activity and the hidden-tab timer ---- */

  function reportActivity() {
    state.lastActivitySent = Date.now();
    broadcast({ type: "activity" });
    if (state.status) {
      state.status.lastActivity = Date.now();
    }
    if (socketOpen()) {
      request("activity").catch(function () {});
      return Promise.resolve();
    }
    // Any non-passive request counts on the server; this one changes nothing (a redirect).
    return fetch(setting("activityUrl"), {
      method: "HEAD",
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
    })
      .then(refreshStatus)
      .catch(function () {});
  }

  function onUserInput(event) {
    if (!state.enabled || state.ended || !event.isTrusted) {
      return;
    }
    const dialog = find("[data-timeout-warning-dialog]");
    if (dialog && dialog.contains(event.target)) {
      return; // only "Stay signed in" counts there
    }
    if (Date.now() - state.lastActivitySent >= ACTIVITY_INTERVAL_MS) {
      reportActivity();
    }
  }

  function hiddenTooLong() {
    state.hiddenTimer = null;
    if (!state.enabled || state.ended || !document.hidden) {
      return;
    }
    anotherTabVisible().then(function (visible) {
      if (!visible && !state.ended) {
        clearPatientSession({ reason: "tab_hidden" }).catch(ignore);
      }
    });
  }

  function onVisibilityChange() {
    const limit = seconds("hiddenTimeout") * 1000;
    window.clearTimeout(state.hiddenTimer);
    state.hiddenTimer = null;
    if (document.hidden) {
      state.hiddenSince = Date.now();
      stopPolling();
      if (limit) {
        state.hiddenTimer = window.setTimeout(hiddenTooLong, limit);
      }
      return;
    }
    // Hidden tabs' timers are throttled: the elapsed time decides, not the timer.
    const since = state.hiddenSince;
    state.hiddenSince = null;
    if (limit && since !== null && Date.now() - since >= limit && state.enabled && !state.ended) {
      clearPatientSession({ reason: "tab_hidden" }).catch(ignore);
    }
    if (!socketOpen()) {
      startPolling();
    }
  }

  /* ---- the timeout warning ---- */

  function scheduleWarning() {
    window.clearTimeout(state.warningTimer);
    state.warningTimer = null;
    const status = state.status;
    const lead = status && status.warning ? status.warning : seconds("timeoutWarning");
    if (!status || !lead || state.ended) {
      return;
    }
    const candidates = [];
    if (status.hasPatientData && status.idleLeft !== null && status.idleLeft !== undefined) {
      candidates.push({ left: status.idleLeft, reason: "patient_session_timeout" });
    }
    if (status.sessionLeft !== null && status.sessionLeft !== undefined) {
      candidates.push({ left: status.sessionLeft, reason: "session_max_inactive" });
    }
    if (!candidates.length) {
      return;
    }
    candidates.sort(function (a, b) {
      return a.left - b.left;
    });
    const first = candidates[0];
    state.warningTimer = window.setTimeout(function () {
      openWarning(leftNow(first.left), first.reason);
    }, Math.max(0, (first.left - lead) * 1000));
  }

  function openWarning(secondsLeft, reason) {
    const dialog = find("[data-timeout-warning-dialog]");
    if (!dialog || state.ended || secondsLeft === null || secondsLeft <= 0) {
      return;
    }
    const deadline = Date.now() + secondsLeft * 1000;
    if (state.dismissed !== null && Math.abs(deadline - state.dismissed) < SAME_DEADLINE_MS) {
      return;
    }
    dialog.querySelector("[data-warning-what]").textContent =
      reason === "session_max_inactive"
        ? "Your session will end"
        : "The patient data on this page will be cleared";
    if (state.warning !== null) {
      state.warning.deadline = deadline;
      return;
    }
    state.warning = {
      deadline: deadline,
      announced: null,
      returnFocus: document.activeElement,
      timer: window.setInterval(tickWarning, TICK_INTERVAL_MS),
    };
    dialog.showModal();
    dialog.querySelector('[data-action="stay-signed-in"]').focus();
    tickWarning();
  }

  function tickWarning() {
    const warning = state.warning;
    const dialog = find("[data-timeout-warning-dialog]");
    if (warning === null || !dialog) {
      return;
    }
    const left = Math.max(0, (warning.deadline - Date.now()) / 1000);
    dialog.querySelector("[data-warning-countdown]").textContent = formatDuration(left);
    // Polite and sparse: at the start, then at 30 s and 10 s, never every second.
    const step = left > 30 ? "start" : left > 10 ? "30" : "10";
    if (warning.announced !== step) {
      warning.announced = step;
      dialog.querySelector("[data-warning-announcer]").textContent =
        formatDuration(left) + " left.";
    }
    if (left <= 0) {
      closeWarning();
      refreshStatus();
    }
  }

  function closeWarning() {
    const warning = state.warning;
    if (warning === null) {
      return;
    }
    state.warning = null;
    window.clearInterval(warning.timer);
    const dialog = find("[data-timeout-warning-dialog]");
    if (dialog && dialog.open) {
      dialog.close();
    }
    if (warning.returnFocus && document.contains(warning.returnFocus)) {
      warning.returnFocus.focus();
    }
  }

  function dismissWarning() {
    if (state.warning !== null) {
      state.dismissed = state.warning.deadline;
    }
    closeWarning();
  }

  function staySignedIn() {
    closeWarning();
    reportActivity();
  }

  /* ---- the cleanups ---- */

  function setBusy(busy) {
    // While this page's own cleanup runs, a status answer is not news about someone else's.
    state.busy = busy;
    document.querySelectorAll("[data-patient-session-cleanup] [data-action]").forEach(
      function (button) {
        button.disabled = busy;
      }
    );
  }

  async function clearPatientSession(options) {
    if (state.ended) {
      throw sessionEndedError();
    }
    const opts = options || {};
    const reason = opts.reason || "manual_cleanup";
    setBusy(true);
    let result;
    try {
      result = await command(
        // The socket's cleanup command has no reason field: the page's timers use HTTP.
        reason === "manual_cleanup" ? "cleanup" : null,
        function () {
          const headers = { "X-Cleanup-Reason": reason };
          if (opts.trigger) {
            headers["X-Cleanup-Trigger"] = opts.trigger;
          }
          return postHttp(setting("clearUrl"), headers);
        }
      );
      if (result.type !== "reply") {
        // A session that ended before this click must not look cleared and still open.
        const body = await fetchStatus().catch(function () {
          return null;
        });
        if (body !== null && !body.authenticated) {
          onEnded({ reason: null, source: "status", items_cleared: null });
          throw sessionEndedError();
        }
      }
    } catch (error) {
      if (!state.ended) {
        showMessage(error.message, "danger");
      }
      throw error;
    } finally {
      setBusy(false);
    }
    // The audit's source, as the server records it: "socket" for socket commands, "api" over
    // HTTP (the trigger the page names there is kept apart, as the audit's client_hint).
    let source = "api";
    if (result.type === "reply") {
      source = "socket";
    }
    if (!state.ended) {
      onCleared({ reason: reason, source: source, items_cleared: result.items_cleared });
    }
    return { success: true, items_cleared: result.items_cleared };
  }

  async function emergencySessionCleanup() {
    if (state.ended) {
      throw sessionEndedError();
    }
    setBusy(true);
    let result;
    try {
      result = await command("emergency_cleanup", function () {
        return postHttp(setting("emergencyUrl"), {});
      });
    } catch (error) {
      showMessage(error.message, "danger");
      throw error;
    } finally {
      setBusy(false);
    }
    const source = result.type === "reply" ? "socket" : "api";
    onEnded({ reason: "emergency_cleanup", source: source, items_cleared: result.items_cleared });
    // Set here, after the response: its Clear-Site-Data may have removed the server's copy.
    leaveNotice("emergency_cleanup");
    window.location.assign(setting("loginUrl"));
    return { success: true, items_cleared: result.items_cleared };
  }

  function confirmEmergency() {
    return window.confirm(
      "Emergency cleanup: end the whole session now and clear all patient data?"
    );
  }

  function ignore() {
    // Failures are already shown in the message area.
  }

  /* ---- wiring ---- */

  function onKeydown(event) {
    if (!state.enabled || state.ended || !event.ctrlKey || !event.shiftKey) {
      return;
    }
    if (event.altKey || event.metaKey) {
      return;
    }
    const key = event.key.toUpperCase();
    if (key === "C") {
      event.preventDefault();
      clearPatientSession({ trigger: "shortcut" }).catch(ignore);
    } else if (key === "E") {
      event.preventDefault();
      if (confirmEmergency()) {
        emergencySessionCleanup().catch(ignore);
      }
    }
  }

  function onClick(event) {
    const button = event.target.closest("[data-patient-session-cleanup] [data-action]");
    if (!button) {
      return;
    }
    const action = button.getAttribute("data-action");
    if (action === "clear-patient-data") {
      clearPatientSession().catch(ignore);
    } else if (action === "emergency-cleanup" && confirmEmergency()) {
      emergencySessionCleanup().catch(ignore);
    } else if (action === "stay-signed-in") {
      staySignedIn();
    } else if (action === "dismiss-warning") {
      dismissWarning();
    }
  }

  function init() {
    if (!widget()) {
      return;
    }
    document.addEventListener("keydown", onKeydown);
    document.addEventListener("click", onClick);
    document.addEventListener("visibilitychange", onVisibilityChange);
    ["keydown", "pointerdown", "wheel", "touchstart", "scroll"].forEach(function (type) {
      document.addEventListener(type, onUserInput, { capture: true, passive: true });
    });
    const dialog = find("[data-timeout-warning-dialog]");
    if (dialog) {
      // Escape closes a modal dialog by itself: a dismissal; tidy up the countdown and focus.
      dialog.addEventListener("close", dismissWarning);
    }
    openChannel();
    if (setting("socketUrl")) {
      setConnection("connecting");
      connect();
    } else {
      setConnection("polling");
      startPolling();
    }
    state.tickTimer = window.setInterval(render, TICK_INTERVAL_MS);
  }

  window.clearPatientSession = function () {
    return clearPatientSession();
  };
  window.emergencySessionCleanup = function () {
    return emergencySessionCleanup();
  };
  window.patientSessionCleanup = {
    manualCleanup: function () {
      return clearPatientSession();
    },
    emergencyCleanup: function () {
      return emergencySessionCleanup();
    },
    refreshStatus: refreshStatus,
    // Turns off the shortcuts, activity reports and the hidden-tab timer. Explicit calls
    // keep working, and the page still blanks when the server clears the data.
    disable: function () {
      state.enabled = false;
      window.clearTimeout(state.hiddenTimer);
    },
    enable: function () {
      state.enabled = true;
    },
    isEnabled: function () {
      return state.enabled;
    },
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
