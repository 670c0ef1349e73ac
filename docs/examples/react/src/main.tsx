import { type FormEvent, StrictMode, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { httpUrl } from "./links";
import { type Rating, type Segment, type Source, type ZantaraChat, useZantaraChat } from "./useZantaraChat";

declare global {
  interface Window {
    __zantara?: Omit<ZantaraChat, "ask" | "stop" | "reset" | "rate">;
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

// Material Icons' thumb_up (Apache-2.0), drawn inline: no icon or emoji font needed.
const THUMB = "M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z";

function Thumb({ down = false }: { down?: boolean }) {
  return (
    <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
      <path d={THUMB} fill="currentColor" transform={down ? "matrix(1 0 0 -1 0 24)" : undefined} />
    </svg>
  );
}

/** Thumbs up and down under an answer; the one pressed is the rating the server stored. */
function Thumbs({ rating, onRate }: { rating: Rating | null | undefined; onRate: (rating: Rating) => void }) {
  return (
    <span className="rating" role="group" aria-label="Was this answer helpful?">
      <button
        type="button"
        className="rate-up"
        aria-pressed={rating === 1}
        aria-label="Helpful"
        title="Helpful"
        onClick={() => onRate(1)}
      >
        <Thumb />
      </button>
      <button
        type="button"
        className="rate-down"
        aria-pressed={rating === -1}
        aria-label="Not helpful"
        title="Not helpful"
        onClick={() => onRate(-1)}
      >
        <Thumb down />
      </button>
    </span>
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
    const { ask: _a, stop: _s, reset: _r, rate: _t, ...snapshot } = chat;
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
        <p key={i} dir="auto" className="turn" data-role={turn.role} data-turn={turn.turn}>
          <b>{turn.role === "user" ? "You" : "Zantara"}:</b> {turn.content}
          {turn.conversationId !== undefined && turn.turn !== undefined && (
            <Thumbs
              rating={turn.rating}
              onRate={(rating) => chat.rate(rating, { conversationId: turn.conversationId!, turn: turn.turn! })}
            />
          )}
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
      {chat.turn !== null && (
        <p id="rating">
          <Thumbs rating={chat.rating} onRate={(rating) => chat.rate(rating)} />{" "}
          {chat.feedbackError && (
            <small id="feedback-error" role="alert">
              {chat.feedbackError.message}
            </small>
          )}
        </p>
      )}
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
