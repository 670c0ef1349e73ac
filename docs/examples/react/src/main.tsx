import { type FormEvent, StrictMode, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { httpUrl } from "./links";
import { type Segment, type Source, type ZantaraChat, useZantaraChat } from "./useZantaraChat";

declare global {
  interface Window {
    __zantara?: Omit<ZantaraChat, "ask" | "stop" | "reset">;
  }
}

// ?backend=http://127.0.0.1:8000&q=...  lets a test (or you) drive the demo from the URL.
const params = new URLSearchParams(location.search);
const backend = params.get("backend") ?? "http://127.0.0.1:8000";
const initialQuestion = params.get("q") ?? "";

/** A cited claim: the cited passages on hover (title), and in a note below it on click or Enter. */
function Claim({ segment, sources }: { segment: Segment; sources: Source[] }) {
  const [open, setOpen] = useState(false);
  const passages = segment.citations.map((c) => ({
    label: `[${c.source}] ${sources[c.source - 1]?.source ?? "Source"}`,
    text: c.citedText,
  }));
  const toggle = () => setOpen((o) => !o);
  return (
    <>
      <mark
        className="claim"
        tabIndex={0}
        role="button"
        aria-expanded={open}
        title={passages.map((p) => `${p.label}: “${p.text.trim()}”`).join("\n")}
        onClick={toggle}
        onKeyDown={(e) => e.key === "Enter" && toggle()}
      >
        {segment.text}
      </mark>
      {open && (
        <span className="claim-cited" role="note">
          {passages.map((p, i) => (
            <q key={i}>
              <b>{p.label}</b> {p.text.trim()}
            </q>
          ))}
        </span>
      )}
    </>
  );
}

function App() {
  const chat = useZantaraChat({ baseUrl: backend, userEmail: params.get("email") ?? undefined });
  const [draft, setDraft] = useState(initialQuestion);
  const asked = useRef(false);

  useEffect(() => {
    // StrictMode runs effects twice in development; ask once.
    if (initialQuestion && !asked.current) {
      asked.current = true;
      chat.ask(initialQuestion);
    }
  }, [chat.ask]);

  useEffect(() => {
    const { ask: _a, stop: _s, reset: _r, ...snapshot } = chat;
    window.__zantara = snapshot;
  });

  const submit = (event: FormEvent) => {
    event.preventDefault();
    chat.ask(draft);
    setDraft("");
  };
  const busy = chat.state === "connecting" || chat.state === "streaming";

  return (
    <main>
      <h1>Zantara · React</h1>
      {chat.history.map((turn, i) => (
        <p key={i} dir="auto">
          <b>{turn.role === "user" ? "You" : "Zantara"}:</b> {turn.content}
        </p>
      ))}
      <form onSubmit={submit}>
        <input
          id="query"
          dir="auto"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="Ask about visas, PT PMA, taxes…"
          size={60}
        />
        <button id="ask" type="submit" disabled={busy}>
          Ask
        </button>
        <button id="stop" type="button" onClick={chat.stop} disabled={!busy}>
          Stop
        </button>
        <button type="button" onClick={chat.reset}>
          New conversation
        </button>
      </form>
      <p>
        <span id="state" className="state">
          {chat.state}
        </span>{" "}
        {chat.done?.degraded && <em>(degraded answer)</em>}
      </p>
      {chat.question && <h2 dir="auto">{chat.question}</h2>}
      <div id="answer" className="answer" dir="auto">
        {chat.segments.map((segment, i) =>
          segment.citations.length ? (
            <Claim key={`${chat.question}:${i}`} segment={segment} sources={chat.sources} />
          ) : (
            <span key={i}>{segment.text}</span>
          ),
        )}
      </div>
      {chat.error && (
        <p id="error" className="error" role="alert" data-code={chat.error.code}>
          {chat.error.message}
          {chat.error.retryAfter !== undefined && ` Try again in ${chat.error.retryAfter} s.`}
        </p>
      )}
      <ol id="sources">
        {chat.sources.map((s, i) => (
          <li key={s.id ?? i} dir="auto">
            {httpUrl(s.url) ? (
              <a href={httpUrl(s.url)} target="_blank" rel="noopener noreferrer">
                {s.source}
              </a>
            ) : (
              s.source
            )}{" "}
            <small>({Math.round(s.similarity * 100)}%)</small>
            <div>{s.snippet}</div>
          </li>
        ))}
      </ol>
    </main>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
