/**
 * useZantaraChat: a Vue 3 composable streaming answers from Zantara RAG's `GET /bali-zero/chat-stream`.
 *
 * Same contract and behaviour as the React hook (docs/frontend.md): text chunks, one sources event, then a
 * terminal done or error event, on which the EventSource is closed (left open, it would reconnect). The browser
 * resumes a dropped stream by itself with `Last-Event-ID`; replayed chunks are skipped by `sequenceNumber`.
 * `segments` keeps the answer cut where a text event's `citations` start a new span, as the React hook does.
 */
import { onScopeDispose, readonly, ref, shallowRef } from "vue";

export type ChatState = "idle" | "connecting" | "streaming" | "done" | "error";

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
  /** A server code (rate_limited, unauthorized, ...) or "connection_failed" when the EventSource failed. */
  code: string;
  message: string;
  retryAfter?: number;
}

export interface UseZantaraChatOptions {
  baseUrl: string;
  userEmail?: string;
  /** Short-lived token sent as `access_token` (EventSource cannot send an Authorization header). */
  accessToken?: string | (() => string | undefined);
  conversation?: boolean;
  maxHistoryMessages?: number;
}

const STREAM_PATH = "/bali-zero/chat-stream";

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

export function useZantaraChat(options: UseZantaraChatOptions) {
  const state = ref<ChatState>("idle");
  const question = ref("");
  const answer = ref("");
  const segments = shallowRef<Segment[]>([]);
  const sources = shallowRef<Source[]>([]);
  const done = shallowRef<DoneEvent | null>(null);
  const error = shallowRef<ChatError | null>(null);
  const chunks = ref(0);
  const gaps = ref(0);
  const reconnects = ref(0);
  const resumes = ref(0);
  const history = shallowRef<ChatMessage[]>([]);
  let es: EventSource | null = null;

  function close() {
    if (es) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
      es = null;
    }
  }

  function stop() {
    if (!es) return;
    close();
    state.value = "idle";
  }

  function clearAnswer() {
    question.value = "";
    answer.value = "";
    segments.value = [];
    sources.value = [];
    done.value = null;
    error.value = null;
    chunks.value = gaps.value = reconnects.value = resumes.value = 0;
  }

  function reset() {
    close();
    history.value = [];
    clearAnswer();
    state.value = "idle";
  }

  function ask(query: string) {
    const q = query.trim();
    if (!q) return;
    close();
    clearAnswer();
    question.value = q;
    const conversation = options.conversation ?? true;
    const sent = conversation ? history.value.slice(-(options.maxHistoryMessages ?? 12)) : [];
    const token = typeof options.accessToken === "function" ? options.accessToken() : options.accessToken;
    const source = new EventSource(buildStreamUrl(options.baseUrl, q, sent, options.userEmail, token));
    es = source;
    state.value = "connecting";
    let lastSeq = 0;
    let awaitingResume = false;

    source.onopen = () => {
      state.value = "streaming";
    };
    source.onmessage = (event: MessageEvent<string>) => {
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(event.data) as Record<string, unknown>;
      } catch {
        return;
      }
      if (typeof data.error === "string") {
        error.value = {
          code: typeof data.code === "string" ? data.code : "internal_error",
          message: data.error,
          retryAfter: typeof data.retryAfter === "number" ? data.retryAfter : undefined,
        };
        close(); // partial text stays (upstream_interrupted, stream_expired)
        state.value = "error";
        return;
      }
      if (typeof data.text === "string") {
        const seq = data.sequenceNumber;
        if (typeof seq === "number") {
          if (seq <= lastSeq) return; // replayed after a reconnect: already shown
          if (seq !== lastSeq + 1) gaps.value += 1;
          lastSeq = seq;
        }
        if (awaitingResume) {
          resumes.value += 1;
          awaitingResume = false;
        }
        chunks.value += 1;
        answer.value += data.text;
        segments.value = appendText(segments.value, data.text, data.citations);
        state.value = "streaming";
        return;
      }
      if (Array.isArray(data.sources)) {
        sources.value = data.sources as Source[];
        return;
      }
      if (data.done === true) {
        const event = data as unknown as DoneEvent;
        if (event.sequenceNumber > lastSeq) gaps.value += 1;
        done.value = event;
        close();
        if (conversation) {
          history.value = [
            ...history.value,
            { role: "user", content: q },
            { role: "assistant", content: answer.value },
          ];
        }
        state.value = "done";
      }
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CONNECTING) {
        reconnects.value += 1; // the browser reconnects with Last-Event-ID by itself
        awaitingResume = true;
        state.value = "connecting";
        return;
      }
      error.value = {
        code: "connection_failed",
        message: "Could not reach Zantara (network error, CORS rejection or non-SSE response).",
      };
      close();
      state.value = "error";
    };
  }

  onScopeDispose(close);

  return {
    state: readonly(state),
    question: readonly(question),
    answer: readonly(answer),
    segments,
    sources,
    done,
    error,
    chunks: readonly(chunks),
    gaps: readonly(gaps),
    reconnects: readonly(reconnects),
    resumes: readonly(resumes),
    history,
    ask,
    stop,
    reset,
  };
}
