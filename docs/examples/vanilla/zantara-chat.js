/**
 * streamZantaraAnswer: the smallest correct client of Zantara RAG's `GET /bali-zero/chat-stream`.
 * A classic script (no module, no build): it defines `window.streamZantaraAnswer`.
 *
 * Every event is a default `message` event with one JSON object: `{text, sequenceNumber}` chunks, one
 * `{sources}`, then `{done: true}` or `{error, code, done: true}`. Close the EventSource on either terminal
 * event; left open it reconnects. Mid-answer drops need nothing: the browser reconnects with Last-Event-ID and
 * the server replays what was missed (replayed chunks are skipped by sequenceNumber).
 *
 * Returns a `stop()` function that really closes the connection.
 */
(function () {
  "use strict";

  function streamZantaraAnswer(options) {
    var url = new URL("/bali-zero/chat-stream", options.baseUrl.replace(/\/+$/, "") + "/");
    url.searchParams.set("query", options.query);
    if (options.userEmail) url.searchParams.set("user_email", options.userEmail);
    if (options.history && options.history.length) {
      url.searchParams.set("conversation_history", JSON.stringify(options.history));
    }
    if (options.accessToken) url.searchParams.set("access_token", options.accessToken);

    var noop = function () {};
    var onText = options.onText || noop;
    var onSources = options.onSources || noop;
    var onDone = options.onDone || noop;
    var onError = options.onError || noop;
    var onReconnect = options.onReconnect || noop;
    var lastSeq = 0;
    var es = new EventSource(url.toString());

    function close() {
      es.onmessage = es.onerror = null;
      es.close();
    }

    es.onmessage = function (event) {
      var data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (typeof data.error === "string") {
        close();
        onError({ code: data.code || "internal_error", message: data.error, retryAfter: data.retryAfter });
      } else if (typeof data.text === "string") {
        if (typeof data.sequenceNumber === "number") {
          if (data.sequenceNumber <= lastSeq) return; // replayed after a reconnect
          lastSeq = data.sequenceNumber;
        }
        onText(data.text, data);
      } else if (Array.isArray(data.sources)) {
        onSources(data.sources);
      } else if (data.done === true) {
        close();
        onDone(data);
      }
    };
    es.onerror = function () {
      if (es.readyState === EventSource.CONNECTING) {
        onReconnect(); // the browser retries by itself with Last-Event-ID
        return;
      }
      close();
      onError({
        code: "connection_failed",
        message: "Could not reach Zantara (network error, CORS rejection or non-SSE response).",
      });
    };
    return close;
  }

  window.streamZantaraAnswer = streamZantaraAnswer;
})();
