#!/usr/bin/env node
// Usage: node node_eventsource.mjs URL [--timeout SECONDS]
//
// Streams URL with the `eventsource` npm package (the WHATWG EventSource for Node) and prints one JSON line per
// received event: {"type", "id", "data"} with data parsed from JSON when it is JSON. Exits on the terminal event
// ({"done": true}): 0 after a clean done, 2 after an error event; 1 when the connection fails or times out.
// ZANTARA_TOKEN, when set, is sent as "Authorization: Bearer <token>" through the custom fetch hook.
import { EventSource } from "eventsource";

const args = process.argv.slice(2);
const url = args.find((a) => !a.startsWith("--"));
const timeoutIndex = args.indexOf("--timeout");
const timeoutSeconds = timeoutIndex >= 0 ? Number(args[timeoutIndex + 1]) : 60;
if (!url) {
  console.error("usage: node node_eventsource.mjs URL [--timeout SECONDS]");
  process.exit(64);
}

const token = process.env.ZANTARA_TOKEN;
const es = new EventSource(url, {
  fetch: (input, init) =>
    fetch(input, {
      ...init,
      headers: { ...init.headers, ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    }),
});

const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const finish = (code) => {
  es.close();
  clearTimeout(timer);
  process.exitCode = code;
};
const timer = setTimeout(() => {
  print({ type: "timeout", seconds: timeoutSeconds });
  finish(1);
}, timeoutSeconds * 1000);

es.onopen = () => print({ type: "open" });
es.onmessage = (event) => {
  let data = event.data;
  try {
    data = JSON.parse(event.data);
  } catch {
    // not JSON: print the raw string
  }
  print({ type: event.type, id: event.lastEventId, data });
  if (data && typeof data === "object" && data.done === true) finish(typeof data.error === "string" ? 2 : 0);
};
es.onerror = (event) => {
  const reconnecting = es.readyState === EventSource.CONNECTING;
  print({ type: "error", reconnecting, message: event.message ?? null, status: event.code ?? null });
  if (!reconnecting) finish(1);
};
