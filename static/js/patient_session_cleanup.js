/*
 * Patient session cleanup for the NCP demo portal: buttons, keyboard shortcuts, a passive
 * session activity monitor, and blanking of the patient data shown on the open page.
 *
 * Deliberately absent: beforeunload/unload/visibility wiping (they fire on every link,
 * form submit and reload) and beacons. Whether a tab was really closed is decided by the
 * server. Hiding the page only pauses the status polling.
 *
 * API: window.clearPatientSession(), window.emergencySessionCleanup(),
 * window.patientSessionCleanup.{manualCleanup(), emergencyCleanup(), disable(), enable()}.
 * Each cleanup dispatches a "patientSessionCleared" CustomEvent on document; its detail is
 * the server's JSON answer plus "kind" ("patient_data", "emergency" or "server").
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
    loginUrl: "/accounts/login/",
  };
  const POLL_INTERVAL_MS = 15000;
  const TICK_INTERVAL_MS = 1000;
  const CLEARED = "cleared";
  const FIELD_TAGS = new Set(["INPUT", "SELECT", "TEXTAREA"]);

  let enabled = true;
  let pollTimer = null;
  let tickTimer = null;
  let lastStatus = null;

  function widget() {
    return document.querySelector("[data-patient-session-cleanup]");
  }

  function setting(name) {
    const root = widget();
    return (root && root.dataset[name]) || DEFAULTS[name];
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) {
      return decodeURIComponent(match[1]);
    }
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (error) {
      return null;
    }
  }

  async function post(url, trigger) {
    const headers = { Accept: "application/json", "X-CSRFToken": csrfToken() };
    if (trigger) {
      headers["X-Cleanup-Trigger"] = trigger;
    }
    const response = await fetch(url, {
      method: "POST",
      headers: headers,
      credentials: "same-origin",
      cache: "no-store",
    });
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

  function isField(element) {
    return FIELD_TAGS.has(element.tagName);
  }

  function showsPatientData() {
    return Array.from(document.querySelectorAll("[data-patient-data]")).some(function (el) {
      if (el.getAttribute("data-patient-data") === CLEARED) {
        return false;
      }
      return isField(el) ? el.value !== "" : true;
    });
  }

  function blankPatientData(text) {
    document.querySelectorAll("[data-patient-data]").forEach(function (el) {
      if (isField(el)) {
        el.value = "";
        return;
      }
      const notice = document.createElement("div");
      notice.className = "alert alert-secondary";
      notice.setAttribute("role", "status");
      notice.textContent = text;
      el.replaceChildren(notice);
      el.setAttribute("data-patient-data", CLEARED);
    });
  }

  function announce(kind, body) {
    const detail = Object.assign({ kind: kind }, body);
    document.dispatchEvent(new CustomEvent("patientSessionCleared", { detail: detail }));
    return detail;
  }

  function showMessage(text, level) {
    const area = document.querySelector("[data-session-messages]");
    if (!area) {
      return;
    }
    const alert = document.createElement("div");
    alert.className = "alert alert-" + level + " py-2";
    alert.setAttribute("role", level === "danger" ? "alert" : "status");
    alert.textContent = text;
    area.replaceChildren(alert);
  }

  function setBusy(busy) {
    document.querySelectorAll("[data-patient-session-cleanup] [data-action]").forEach(
      function (button) {
        button.disabled = busy;
      }
    );
  }

  async function run(url, trigger) {
    setBusy(true);
    try {
      return await post(url, trigger);
    } catch (error) {
      showMessage(error.message, "danger");
      throw error;
    } finally {
      setBusy(false);
    }
  }

  async function clearPatientSession(options) {
    const body = await run(setting("clearUrl"), options && options.trigger);
    blankPatientData("Patient data was cleared from this session.");
    showMessage("Patient data cleared (" + body.items_cleared + " item(s)).", "success");
    const detail = announce("patient_data", body);
    refreshStatus();
    return detail;
  }

  async function emergencySessionCleanup(options) {
    const body = await run(setting("emergencyUrl"), options && options.trigger);
    stopMonitor();
    blankPatientData("The session was ended. Sign in again to continue.");
    const detail = announce("emergency", body);
    window.location.assign(setting("loginUrl"));
    return detail;
  }

  function confirmEmergency() {
    return window.confirm(
      "Emergency logout: end the whole session now, clearing all patient data?"
    );
  }

  function ignore() {
    // Failures are already shown in the message area.
  }

  function formatDuration(seconds) {
    const total = Math.max(0, Math.round(seconds));
    const minutes = Math.floor(total / 60);
    return minutes ? minutes + " min " + (total % 60) + " s" : total + " s";
  }

  function monitor() {
    return document.querySelector("[data-session-monitor]");
  }

  function render() {
    const element = monitor();
    if (!element || !lastStatus) {
      return;
    }
    const status = lastStatus.body;
    const elapsed = (Date.now() - lastStatus.at) / 1000;
    let text;
    if (!status.authenticated) {
      text = "signed out";
    } else if (status.has_patient_data && status.seconds_until_timeout !== null) {
      text =
        "idle " + formatDuration(status.idle_seconds + elapsed) +
        ", patient data clears in " + formatDuration(status.seconds_until_timeout - elapsed);
    } else {
      text = "idle " + formatDuration(status.idle_seconds + elapsed) + ", no patient data held";
    }
    element.textContent = "Session activity monitor: " + text + ".";
  }

  async function refreshStatus() {
    if (!monitor()) {
      return;
    }
    try {
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
      lastStatus = { body: body, at: Date.now() };
      if ((!body.authenticated || !body.has_patient_data) && showsPatientData()) {
        // The server cleared the data (timeout, another tab, an administrator).
        blankPatientData(
          body.authenticated
            ? "Patient data was cleared by the server."
            : "The session has ended. Sign in again to continue."
        );
        announce("server", { success: true, items_cleared: null });
      }
      render();
    } catch (error) {
      monitor().textContent = "Session activity monitor: status unavailable.";
    }
  }

  function startMonitor() {
    if (!enabled || pollTimer !== null || document.hidden || !monitor()) {
      return;
    }
    refreshStatus();
    pollTimer = window.setInterval(refreshStatus, POLL_INTERVAL_MS);
    tickTimer = window.setInterval(render, TICK_INTERVAL_MS);
  }

  function stopMonitor() {
    window.clearInterval(pollTimer);
    window.clearInterval(tickTimer);
    pollTimer = null;
    tickTimer = null;
  }

  function onKeydown(event) {
    if (!enabled || !event.ctrlKey || !event.shiftKey || event.altKey || event.metaKey) {
      return;
    }
    const key = event.key.toUpperCase();
    if (key === "C") {
      event.preventDefault();
      clearPatientSession({ trigger: "shortcut" }).catch(ignore);
    } else if (key === "E") {
      event.preventDefault();
      if (confirmEmergency()) {
        emergencySessionCleanup({ trigger: "shortcut" }).catch(ignore);
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
    } else if (action === "emergency-logout" && confirmEmergency()) {
      emergencySessionCleanup().catch(ignore);
    }
  }

  function init() {
    document.addEventListener("keydown", onKeydown);
    document.addEventListener("click", onClick);
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) {
        stopMonitor();
      } else {
        startMonitor();
      }
    });
    startMonitor();
  }

  window.clearPatientSession = clearPatientSession;
  window.emergencySessionCleanup = emergencySessionCleanup;
  window.patientSessionCleanup = {
    manualCleanup: function () {
      return clearPatientSession();
    },
    emergencyCleanup: function () {
      return emergencySessionCleanup();
    },
    refreshStatus: refreshStatus,
    // Turns off the shortcuts and the status polling; explicit calls keep working.
    disable: function () {
      enabled = false;
      stopMonitor();
    },
    enable: function () {
      enabled = true;
      startMonitor();
    },
    isEnabled: function () {
      return enabled;
    },
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
