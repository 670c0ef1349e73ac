/**
 * useZantaraChat: stream answers from Zantara RAG's `GET /bali-zero/chat-stream` with the browser's EventSource.
 *
 * The contract (docs/frontend.md): every event is a default `message` event carrying one JSON object:
 * `{text, sequenceNumber}` chunks, one `{sources: [...]}`, then a terminal `{done: true, ...}` or
 * `{error, code, done: true}`. The hook closes the EventSource on either terminal event, because an
 * EventSource left open reconnects when the server ends the body. Mid-answer drops need no code here: the
 * browser reconnects with `Last-Event-ID` and the server replays what was missed; chunks already shown are
 * skipped by `sequenceNumber`, so the answer never duplicates text. A text event that carries `citations`
 * starts a new span of the answer, resting on those passage spans (`[]`: on none); `segments` keeps the
 * answer cut that way, so a UI can show the passage behind each claim.
 */
import { useCallback, useEffect, useRef, useState } from "react";

export type ChatState = "idle" | "connecting" | "streaming" | "done" | "error";

export type ErrorCode =
  | "invalid_query"
  | "query_too_long"
  | "invalid_history"
  | "invalid_email"
  | "retrieval_unavailable"
  | "upstream_interrupted"
  | "stream_expired"
  | "shutting_down"
  | "rate_limited"
  | "budget_exhausted"
  | "unauthorized"
  | "internal_error"
  /** Client side: the EventSource failed (network, CORS rejection, non-200 response). */
  | "connection_failed";

export interface Source {
  source: string;
  snippet: string;
  similarity: number;
  url?: string | null;
  section?: string | null;
  id?: string;
  /** The exact spans of this source the answer cited. */
  cited?: string[];
}

/** A passage span a claim rests on: `source` is its `[n]` (1-based into `sources`). */
export interface Citation {
  source: number;
  citedText: string;
}

/** A run of the answer's text and the citations it rests on (none for uncited text). */
export interface Segment {
  text: string;
  citations: Citation[];
}

export interface ChatMessage {
  role: "user" | "assistant";
  content: string;
}

export interface DoneEvent {
  done: true;
  sequenceNumber: number;
  timestamp: number;
  streamDuration?: number;
  model?: string;
  degraded?: boolean;
}

export interface ChatError {
  code: ErrorCode | string;
  message: string;
  /** Seconds to wait before asking again (rate_limited). */
  retryAfter?: number;
}

export interface UseZantaraChatOptions {
  /** Backend origin, e.g. "https://zantara-rag.fly.dev". */
  baseUrl: string;
  userEmail?: string;
  /** Short-lived token sent as `access_token` (EventSource cannot send an Authorization header). */
  accessToken?: string | (() => string | undefined);
  /** Send previous turns as `conversation_history` (default true). */
  conversation?: boolean;
  /** The server rejects oversized history with invalid_history; keep the most recent messages. */
  maxHistoryMessages?: number;
}

export interface ZantaraChat {
  state: ChatState;
  question: string;
  answer: string;
  /** The answer cut where its citations change. */
  segments: Segment[];
  sources: Source[];
  done: DoneEvent | null;
  error: ChatError | null;
  chunks: number;
  gaps: number;
  reconnects: number;
  resumes: number;
  history: ChatMessage[];
  ask: (query: string) => void;
  stop: () => void;
  reset: () => void;
}

const STREAM_PATH = "/bali-zero/chat-stream";

interface Progress {
  question: string;
  answer: string;
  segments: Segment[];
  sources: Source[];
  done: DoneEvent | null;
  error: ChatError | null;
  chunks: number;
  gaps: number;
  reconnects: number;
  resumes: number;
}

const EMPTY: Progress = {
  question: "",
  answer: "",
  segments: [],
  sources: [],
  done: null,
  error: null,
  chunks: 0,
  gaps: 0,
  reconnects: 0,
  resumes: 0,
};

export function buildStreamUrl(
  baseUrl: string,
  query: string,
  history: ChatMessage[],
  userEmail?: string,
  accessToken?: string,
): string {
  const url = new URL(STREAM_PATH, baseUrl.replace(/\/+$/, "") + "/");
  url.searchParams.set("query", query);
  if (userEmail) url.searchParams.set("user_email", userEmail);
  if (history.length) url.searchParams.set("conversation_history", JSON.stringify(history));
  if (accessToken) url.searchParams.set("access_token", accessToken);
  return url.toString();
}

/** `segments` with `text` added: to a new segment when `citations` is present, else to the last one. */
export function appendText(segments: Segment[], text: string, citations: unknown): Segment[] {
  if (Array.isArray(citations) || segments.length === 0) {
    return [...segments, { text, citations: Array.isArray(citations) ? (citations as Citation[]) : [] }];
  }
  const last = segments[segments.length - 1];
  return [...segments.slice(0, -1), { ...last, text: last.text + text }];
}

export function useZantaraChat(options: UseZantaraChatOptions): ZantaraChat {
  const [state, setState] = useState<ChatState>("idle");
  const [progress, setProgress] = useState<Progress>(EMPTY);
  const [history, setHistory] = useState<ChatMessage[]>([]);
  const sourceRef = useRef<EventSource | null>(null);
  const historyRef = useRef<ChatMessage[]>([]);
  const optionsRef = useRef(options);
  optionsRef.current = options;

  const close = useCallback(() => {
    const es = sourceRef.current;
    if (es) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
      sourceRef.current = null;
    }
  }, []);

  const stop = useCallback(() => {
    if (!sourceRef.current) return;
    close();
    setState("idle");
  }, [close]);

  const reset = useCallback(() => {
    close();
    historyRef.current = [];
    setHistory([]);
    setProgress(EMPTY);
    setState("idle");
  }, [close]);

  const ask = useCallback(
    (query: string) => {
      const question = query.trim();
      if (!question) return;
      close();
      const opts = optionsRef.current;
      const conversation = opts.conversation ?? true;
      const maxMessages = opts.maxHistoryMessages ?? 12;
      const sent = conversation ? historyRef.current.slice(-maxMessages) : [];
      const token = typeof opts.accessToken === "function" ? opts.accessToken() : opts.accessToken;
      const es = new EventSource(buildStreamUrl(opts.baseUrl, question, sent, opts.userEmail, token));
      sourceRef.current = es;

      // Mutable per-stream bookkeeping; React state gets a fresh copy after every event.
      const p: Progress = { ...EMPTY, question, segments: [] };
      let lastSeq = 0;
      let awaitingResume = false;
      const publish = () => setProgress({ ...p });
      setState("connecting");
      publish();

      es.onopen = () => setState("streaming");
      es.onmessage = (event: MessageEvent<string>) => {
        let data: Record<string, unknown>;
        try {
          data = JSON.parse(event.data) as Record<string, unknown>;
        } catch {
          return;
        }
        if (typeof data.error === "string") {
          p.error = {
            code: typeof data.code === "string" ? data.code : "internal_error",
            message: data.error,
            retryAfter: typeof data.retryAfter === "number" ? data.retryAfter : undefined,
          };
          close();
          publish(); // partial text stays visible (upstream_interrupted, stream_expired)
          setState("error");
          return;
        }
        if (typeof data.text === "string") {
          const seq = data.sequenceNumber;
          if (typeof seq === "number") {
            if (seq <= lastSeq) return; // replayed after a reconnect: already shown
            if (seq !== lastSeq + 1) p.gaps += 1;
            lastSeq = seq;
          }
          if (awaitingResume) {
            p.resumes += 1;
            awaitingResume = false;
          }
          p.chunks += 1;
          p.answer += data.text;
          p.segments = appendText(p.segments, data.text, data.citations);
          publish();
          setState("streaming");
          return;
        }
        if (Array.isArray(data.sources)) {
          p.sources = data.sources as Source[];
          publish();
          return;
        }
        if (data.done === true) {
          const done = data as unknown as DoneEvent;
          if (done.sequenceNumber > lastSeq) p.gaps += 1;
          p.done = done;
          close();
          if (conversation) {
            historyRef.current = [
              ...historyRef.current,
              { role: "user", content: question },
              { role: "assistant", content: p.answer },
            ];
            setHistory(historyRef.current);
          }
          publish();
          setState("done");
        }
      };
      es.onerror = () => {
        if (es.readyState === EventSource.CONNECTING) {
          // The browser reconnects by itself and sends Last-Event-ID; keep what we have.
          p.reconnects += 1;
          awaitingResume = true;
          publish();
          setState("connecting");
          return;
        }
        p.error = {
          code: "connection_failed",
          message: "Could not reach Zantara (network error, CORS rejection or non-SSE response).",
        };
        close();
        publish();
        setState("error");
      };
    },
    [close],
  );

  useEffect(() => close, [close]);

  return { state, ...progress, history, ask, stop, reset };
}
