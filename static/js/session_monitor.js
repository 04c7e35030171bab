/*
 * Staff dashboard: a live table of the sessions holding patient data and an event feed, fed by
 * /ws/monitor/ (docs/events.md). The page is rendered by the server first, so it stays useful
 * when the socket is down, and says so.
 *
 * Nothing here ever sees a patient value: rows carry a user name, a keyed session reference,
 * counts and registry entry names.
 */
(function () {
  "use strict";

  const root = document.querySelector("[data-session-monitor-dashboard]");
  if (!root) {
    return;
  }
  const table = root.querySelector("[data-monitor-rows]");
  const feed = root.querySelector("[data-monitor-feed]");
  const state = root.querySelector("[data-monitor-connection]");
  const notice = root.querySelector("[data-monitor-notice]");
  const empty = root.querySelector("[data-monitor-empty]");
  const canAct = root.dataset.canAct === "true";
  const FEED_LIMIT = 50;
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];

  let socket = null;
  let attempt = 0;
  let nextId = 1;
  let ended = false;
  // Deadlines are kept as local clock times so the countdown ticks without the server.
  const deadlines = new Map();

  const BADGES = { live: "text-bg-success", connecting: "text-bg-warning", offline: "text-bg-secondary" };

  function setConnection(kind, text) {
    state.dataset.state = kind;
    state.className = "badge " + BADGES[kind];
    state.textContent = text;
  }

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined) {
      return "—";
    }
    const total = Math.max(0, Math.round(seconds));
    const minutes = Math.floor(total / 60);
    return minutes ? minutes + " min " + (total % 60) + " s" : total + " s";
  }

  function formatTime(epochSeconds) {
    if (!epochSeconds) {
      return "—";
    }
    return new Date(epochSeconds * 1000).toLocaleTimeString();
  }

  function rowFor(ref) {
    return table.querySelector('tr[data-session="' + CSS.escape(ref) + '"]');
  }

  function cell(row, name) {
    return row.querySelector('[data-field="' + name + '"]');
  }

  function plural(count, word) {
    return count + " " + word + (count === 1 ? "" : "s");
  }

  function actionButton(label, command, ref, style) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-sm " + style;
    button.dataset.command = command;
    button.dataset.session = ref;
    button.textContent = label;
    return button;
  }

  function buildRow(entry) {
    const row = document.createElement("tr");
    row.dataset.session = entry.session;
    const fields = ["user", "session", "items", "keys", "last_activity", "idle", "open_tabs"];
    fields.forEach(function (name) {
      const td = document.createElement("td");
      td.dataset.field = name;
      if (name === "keys") {
        td.className = "small d-none d-lg-table-cell";
      }
      row.appendChild(td);
    });
    const actions = document.createElement("td");
    actions.className = "text-nowrap";
    if (canAct) {
      actions.append(
        actionButton("Clear data", "cleanup", entry.session, "btn-outline-secondary me-1"),
        actionButton("End session", "end_session", entry.session, "btn-outline-danger")
      );
    }
    row.appendChild(actions);
    return row;
  }

  function fillRow(row, entry) {
    const ref = entry.session;
    cell(row, "user").textContent = entry.user || "—";
    const code = document.createElement("code");
    code.textContent = ref.slice(0, 12);
    code.title = ref;
    cell(row, "session").replaceChildren(code);
    cell(row, "items").textContent = entry.items;
    cell(row, "keys").textContent = (entry.keys || []).join(", ");
    cell(row, "last_activity").textContent = formatTime(entry.last_activity);
    if (entry.open_tabs !== undefined) {
      cell(row, "open_tabs").textContent = entry.open_tabs;
    } else if (!cell(row, "open_tabs").textContent) {
      cell(row, "open_tabs").textContent = "—";
    }
    setDeadline(ref, entry.idle_seconds_left);
  }

  function upsert(entry) {
    let row = rowFor(entry.session);
    if (!row) {
      row = buildRow(entry);
      table.appendChild(row);
    }
    fillRow(row, entry);
    refreshEmpty();
  }

  function remove(ref) {
    const row = rowFor(ref);
    if (row) {
      row.remove();
    }
    deadlines.delete(ref);
    refreshEmpty();
  }

  function refreshEmpty() {
    empty.hidden = table.querySelector("tr[data-session]") !== null;
  }

  function setDeadline(ref, secondsLeft) {
    if (secondsLeft === null || secondsLeft === undefined) {
      deadlines.delete(ref);
    } else {
      deadlines.set(ref, Date.now() + secondsLeft * 1000);
    }
    tick();
  }

  function tick() {
    table.querySelectorAll("tr[data-session]").forEach(function (row) {
      const deadline = deadlines.get(row.dataset.session);
      const left = deadline === undefined ? null : (deadline - Date.now()) / 1000;
      cell(row, "idle").textContent = formatDuration(left);
    });
  }

  function describe(frame) {
    const who = frame.session ? frame.session.slice(0, 12) : "";
    switch (frame.type) {
      case "session.cleared":
        return who + ": patient data cleared (" + frame.reason + ", " + frame.source + ", " +
          plural(frame.items_cleared, "item") + ")";
      case "session.ended":
        return who + ": session ended (" + frame.reason + ", " + frame.source + ")";
      case "session.timeout_warning":
        return who + ": idle timeout in " + formatDuration(frame.seconds_left);
      case "session.stored":
        return who + ": " + (frame.user || "a session") + " holds " + plural(frame.items, "item");
      default:
        return null;
    }
  }

  function addToFeed(text) {
    const item = document.createElement("li");
    item.className = "list-group-item py-1";
    const time = document.createElement("time");
    time.className = "text-body-secondary me-2";
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString();
    item.append(time, document.createTextNode(text));
    feed.prepend(item);
    while (feed.children.length > FEED_LIMIT) {
      feed.lastElementChild.remove();
    }
  }

  function showNotice(text, level) {
    const alert = document.createElement("div");
    alert.className = "alert alert-" + level + " py-2 mb-2";
    alert.setAttribute("role", level === "danger" ? "alert" : "status");
    alert.textContent = text;
    notice.replaceChildren(alert);
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "sessions.snapshot":
        table.querySelectorAll("tr[data-session]").forEach(function (row) {
          row.remove();
        });
        deadlines.clear();
        (frame.sessions || []).forEach(upsert);
        refreshEmpty();
        return;
      case "session.stored":
        upsert(frame);
        break;
      case "session.cleared":
      case "session.ended":
        remove(frame.session);
        break;
      case "session.activity": {
        // items: the patient data items the session holds (null: not known).
        const row = rowFor(frame.session);
        if (row && frame.items === 0) {
          remove(frame.session); // its cleanup's event did not reach us
        } else if (row) {
          cell(row, "last_activity").textContent = formatTime(Date.now() / 1000);
          setDeadline(frame.session, frame.idle_seconds_left);
        } else if (frame.items !== 0) {
          send({ type: "status" }); // it may hold data we do not list: resynchronise
        }
        return;
      }
      case "presence.changed": {
        // The table shows it; the feed would flicker with every page change of a clinician.
        const row = rowFor(frame.session);
        if (row) {
          cell(row, "open_tabs").textContent = frame.open_tabs;
        }
        return;
      }
      case "reply":
        if (frame.command === "cleanup" || frame.command === "end_session") {
          showNotice(
            (frame.command === "cleanup" ? "Patient data cleared: " : "Session ended: ") +
              plural(frame.items_cleared || 0, "item") + ".",
            "success"
          );
        }
        return;
      case "error":
        showNotice(frame.message || "The command was refused.", "danger");
        return;
      default:
        break;
    }
    const text = describe(frame);
    if (text) {
      addToFeed(text);
    }
  }

  function send(command) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showNotice("Not connected: the command was not sent. Reload the page.", "warning");
      return false;
    }
    socket.send(JSON.stringify(Object.assign({ id: nextId++ }, command)));
    return true;
  }

  function onClick(event) {
    const button = event.target.closest("button[data-command]");
    if (!button || !root.contains(button)) {
      return;
    }
    const ref = button.dataset.session;
    const user = cell(rowFor(ref), "user").textContent;
    const question =
      button.dataset.command === "cleanup"
        ? "Clear the patient data of " + user + "'s session " + ref.slice(0, 12) + "?"
        : "End " + user + "'s session " + ref.slice(0, 12) + " (the user is signed out)?";
    if (window.confirm(question)) {
      send({ type: button.dataset.command, session: ref });
    }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    setConnection("connecting", attempt ? "Reconnecting…" : "Connecting…");
    socket = new WebSocket(scheme + window.location.host + root.dataset.socketPath);
    socket.addEventListener("open", function () {
      attempt = 0;
      setConnection("live", "Live");
    });
    socket.addEventListener("message", function (event) {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      onFrame(frame);
    });
    socket.addEventListener("close", function (event) {
      socket = null;
      if (event.code === 4001 || event.code === 4003) {
        ended = true;
        setConnection("offline", "Offline: your session has ended. Sign in again.");
        return;
      }
      if (ended) {
        return;
      }
      setConnection("offline", "Offline: showing the last known state. Reconnecting…");
      const base = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
      attempt += 1;
      window.setTimeout(connect, base + Math.random() * base);
    });
  }

  root.querySelectorAll("tr[data-session]").forEach(function (row) {
    const seen = cell(row, "last_activity").dataset.epoch;
    if (seen) {
      cell(row, "last_activity").textContent = formatTime(Number(seen));
    }
    const left = row.dataset.idleSecondsLeft;
    if (left !== undefined && left !== "") {
      deadlines.set(row.dataset.session, Date.now() + Number(left) * 1000);
    }
  });
  root.addEventListener("click", onClick);
  window.setInterval(tick, 1000);
  tick();
  if ("WebSocket" in window) {
    connect();
  } else {
    setConnection("offline", "Offline: this browser has no WebSocket support.");
  }
})();
