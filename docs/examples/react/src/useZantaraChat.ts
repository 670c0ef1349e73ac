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
 *
 * Conversations and ratings: a follow-up sends the last done event's `conversationId` as `conversation_id`
 * (the server supplies the earlier turns), and `rate` posts a thumbs up or down for an answer to
 * `POST /feedback`, naming it by its conversation and 1-based turn, which the hook counts (`nextTurns`).
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

/** A thumbs up (1) or down (-1). */
export type Rating = 1 | -1;

/** Which answer a rating is for: its conversation and its 1-based turn in it (`POST /feedback`). */
export interface AnswerRef {
  conversationId: string;
  turn: number;
}

export interface ChatMessage {
  role: "user" | "assistant";
  content: string;
  /** An answer's conversation and turn, when known (for `rate`), and the rating it was given. */
  conversationId?: string;
  turn?: number;
  rating?: Rating | null;
}

export interface DoneEvent {
  done: true;
  sequenceNumber: number;
  timestamp: number;
  streamDuration?: number;
  model?: string;
  degraded?: boolean;
  /** The conversation this answer belongs to: sent back as `conversation_id` to continue it. */
  conversationId?: string;
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
  /** Continue the conversation (default true): a follow-up sends its `conversation_id`. */
  conversation?: boolean;
  /**
   * Also send the previous turns as `conversation_history` (default false: only while no conversation id is
   * known). For a server with STORE_CONVERSATIONS=false, which keeps no turns to supply.
   */
  sendHistory?: boolean;
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
  /** The current answer's conversation and turn, once known: what `rate()` rates by default. */
  conversationId: string | null;
  turn: number | null;
  /** The rating stored for the current answer. */
  rating: Rating | null;
  /** Why the last rating was not stored. */
  feedbackError: ChatError | null;
  ask: (query: string) => void;
  stop: () => void;
  reset: () => void;
  /** Rate an answer (default: the current one); resolves true once the server stored it. */
  rate: (rating: Rating, answer?: AnswerRef) => Promise<boolean>;
}

const STREAM_PATH = "/bali-zero/chat-stream";
const FEEDBACK_PATH = "/feedback";
// Every refusal's one event carries this stream token (docs/api.md): a refused question is no turn.
const REFUSAL_ID = /-0{32}:\d+$/;

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
  conversationId: string | null;
  turn: number | null;
  rating: Rating | null;
  feedbackError: ChatError | null;
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
  conversationId: null,
  turn: null,
  rating: null,
  feedbackError: null,
};

/** The conversation the next question continues: its id and how many turns (answers) it has so far. */
export interface Conversation {
  id: string;
  answers: number;
}

/** How an answer ended, for counting turns (docs/frontend.md, "Rating answers"). */
export type Ending =
  /** Its done event: a turn of the conversation that event names. */
  | { kind: "done"; conversationId?: string }
  /** A refusal (its one event's id has the all-zero stream token): no turn. */
  | { kind: "refused" }
  /** An error event of the answer's own stream (upstream_interrupted, ...): a turn. */
  | { kind: "failed" }
  /** Stop, a lost connection: the server may still be answering, and numbers the turn when it ends. */
  | { kind: "unfinished" };

/**
 * After an answer ends: the conversation to continue, and the answer's own conversation and turn (null when
 * it cannot be rated). `sent` is the conversation the question continued (null for a new one). The turn is
 * the count of the conversation's answers: refusals are no turns, failed answers are. An unfinished answer is
 * numbered when the server ends it, perhaps after a follow-up's answer, so its conversation is not continued:
 * the next question starts a new one (with the client's own history).
 */
export function nextTurns(
  previous: Conversation | null,
  sent: Conversation | null,
  ending: Ending,
): { conversation: Conversation | null; answer: AnswerRef | null } {
  if (ending.kind === "refused") return { conversation: previous, answer: null };
  if (ending.kind === "unfinished") return { conversation: null, answer: null };
  let conversation: Conversation;
  if (ending.kind === "done") {
    if (!ending.conversationId) return { conversation: previous, answer: null };
    const continued = sent !== null && sent.id === ending.conversationId;
    conversation = { id: ending.conversationId, answers: continued ? sent.answers + 1 : 1 };
  } else {
    if (sent === null) return { conversation: previous, answer: null }; // a conversation never named to us
    conversation = { id: sent.id, answers: sent.answers + 1 };
  }
  return { conversation, answer: { conversationId: conversation.id, turn: conversation.answers } };
}

export function buildStreamUrl(
  baseUrl: string,
  query: string,
  history: ChatMessage[],
  userEmail?: string,
  accessToken?: string,
  conversationId?: string,
): string {
  const url = new URL(STREAM_PATH, baseUrl.replace(/\/+$/, "") + "/");
  url.searchParams.set("query", query);
  if (userEmail) url.searchParams.set("user_email", userEmail);
  if (conversationId) url.searchParams.set("conversation_id", conversationId);
  if (history.length) {
    const turns = history.map(({ role, content }) => ({ role, content }));
    url.searchParams.set("conversation_history", JSON.stringify(turns));
  }
  if (accessToken) url.searchParams.set("access_token", accessToken);
  return url.toString();
}

/** `POST /feedback`; null once stored (204), else why not. The token goes in a header, never in a URL. */
export async function postFeedback(
  baseUrl: string,
  answer: AnswerRef,
  rating: Rating,
  accessToken?: string,
): Promise<ChatError | null> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  const body = JSON.stringify({ conversation_id: answer.conversationId, turn: answer.turn, rating });
  try {
    const response = await fetch(new URL(FEEDBACK_PATH, baseUrl.replace(/\/+$/, "") + "/"), {
      method: "POST",
      headers,
      body,
    });
    if (response.status === 204) return null;
    const error = (await response.json().catch(() => ({}))) as { error?: string; code?: string };
    return {
      code: error.code ?? "feedback_failed",
      message: error.error ?? `The rating was not stored (${response.status}).`,
    };
  } catch {
    return { code: "connection_failed", message: "The rating could not be sent (network error or CORS rejection)." };
  }
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
  const conversationRef = useRef<Conversation | null>(null);
  // The current answer's bookkeeping, and how it ends if it is stopped (unfinished: not continued).
  const currentRef = useRef<Progress>(EMPTY);
  const interruptRef = useRef<(() => void) | null>(null);
  const optionsRef = useRef(options);
  optionsRef.current = options;

  const close = useCallback(() => {
    const es = sourceRef.current;
    if (es) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
      sourceRef.current = null;
    }
    interruptRef.current = null;
  }, []);

  const stop = useCallback(() => {
    if (!sourceRef.current) return;
    const interrupt = interruptRef.current;
    close();
    interrupt?.();
    setState("idle");
  }, [close]);

  const reset = useCallback(() => {
    close();
    historyRef.current = [];
    conversationRef.current = null;
    currentRef.current = EMPTY;
    setHistory([]);
    setProgress(EMPTY);
    setState("idle");
  }, [close]);

  const ask = useCallback(
    (query: string) => {
      const question = query.trim();
      if (!question) return;
      const interrupt = interruptRef.current; // an answer still streaming ends here, unfinished
      close();
      interrupt?.();
      const opts = optionsRef.current;
      const conversation = opts.conversation ?? true;
      const maxMessages = opts.maxHistoryMessages ?? 12;
      const sent = conversation ? conversationRef.current : null;
      // The server supplies a continued conversation's turns; the hook's own copy goes only without an id.
      const history = conversation && (!sent || opts.sendHistory) ? historyRef.current.slice(-maxMessages) : [];
      const token = typeof opts.accessToken === "function" ? opts.accessToken() : opts.accessToken;
      const es = new EventSource(buildStreamUrl(opts.baseUrl, question, history, opts.userEmail, token, sent?.id));
      sourceRef.current = es;

      // Mutable per-stream bookkeeping; React state gets a fresh copy after every event.
      const p: Progress = { ...EMPTY, question, segments: [] };
      currentRef.current = p;
      let lastSeq = 0;
      let awaitingResume = false;
      let opened = false; // an event of the answer's own stream arrived
      let refused = false; // its first event was a refusal
      const publish = () => setProgress({ ...p });
      const settle = (ending: Ending) => {
        const next = nextTurns(conversationRef.current, sent, ending);
        conversationRef.current = next.conversation;
        if (next.answer) {
          p.conversationId = next.answer.conversationId;
          p.turn = next.answer.turn;
        }
      };
      interruptRef.current = () => {
        settle({ kind: "unfinished" });
        publish();
      };
      setState("connecting");
      publish();

      es.onopen = () => setState("streaming");
      es.onmessage = (event: MessageEvent<string>) => {
        const refusal = REFUSAL_ID.test(event.lastEventId);
        if (refusal && !opened) refused = true;
        if (!refusal) opened = true;
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
          // A refused resume (after events of the answer) says nothing of how the answer itself ended.
          settle({ kind: refused ? "refused" : refusal ? "unfinished" : "failed" });
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
          settle({ kind: "done", conversationId: done.conversationId });
          if (conversation) {
            const answer: ChatMessage =
              p.conversationId !== null && p.turn !== null
                ? { role: "assistant", content: p.answer, conversationId: p.conversationId, turn: p.turn, rating: null }
                : { role: "assistant", content: p.answer };
            historyRef.current = [...historyRef.current, { role: "user", content: question }, answer];
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
        settle({ kind: "unfinished" });
        publish();
        setState("error");
      };
    },
    [close],
  );

  const rate = useCallback(async (rating: Rating, answer?: AnswerRef): Promise<boolean> => {
    const current = currentRef.current;
    const target =
      answer ??
      (current.conversationId !== null && current.turn !== null
        ? { conversationId: current.conversationId, turn: current.turn }
        : null);
    if (!target) return false;
    const opts = optionsRef.current;
    const token = typeof opts.accessToken === "function" ? opts.accessToken() : opts.accessToken;
    const error = await postFeedback(opts.baseUrl, target, rating, token);
    const same = (a: { conversationId?: string | null; turn?: number | null }) =>
      a.conversationId === target.conversationId && a.turn === target.turn;
    if (same(current)) {
      // The answer may still be on screen: its thumbs show what was stored, or why not.
      if (!error) current.rating = rating;
      current.feedbackError = error;
      if (currentRef.current === current) setProgress({ ...current });
    }
    if (!error) {
      historyRef.current = historyRef.current.map((m) => (same(m) ? { ...m, rating } : m));
      setHistory(historyRef.current);
    }
    return error === null;
  }, []);

  useEffect(() => close, [close]);

  return { state, ...progress, history, ask, stop, reset, rate };
}
