/**
 * useZantaraChat: a Vue 3 composable streaming answers from Zantara RAG's `GET /bali-zero/chat-stream`.
 *
 * Same contract and behaviour as the React hook (docs/frontend.md): text chunks, one sources event, then a
 * terminal done or error event, on which the EventSource is closed (left open, it would reconnect). The browser
 * resumes a dropped stream by itself with `Last-Event-ID`; replayed chunks are skipped by `sequenceNumber`.
 * `segments` keeps the answer cut where a text event's `citations` start a new span, as the React hook does.
 * A follow-up sends the last done event's `conversationId` as `conversation_id` (the server supplies the
 * earlier turns), and `rate` posts a thumbs up or down to `POST /feedback` for an answer, named by its
 * conversation and 1-based turn, which the composable counts as the React hook does (`nextTurns`).
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
  /** Continue the conversation (default true): a follow-up sends its `conversation_id`. */
  conversation?: boolean;
  /** Also send `conversation_history` (default false: only while no conversation id is known). */
  sendHistory?: boolean;
  maxHistoryMessages?: number;
}

const STREAM_PATH = "/bali-zero/chat-stream";
const FEEDBACK_PATH = "/feedback";
// Every refusal's one event carries this stream token (docs/api.md): a refused question is no turn.
const REFUSAL_ID = /-0{32}:\d+$/;

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
 * the next question starts a new one (with the client's own history). The same rules as the React hook's.
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
  // The current answer's conversation and turn once known (what `rate()` rates by default), and its rating.
  const conversationId = ref<string | null>(null);
  const turn = ref<number | null>(null);
  const rating = ref<Rating | null>(null);
  const feedbackError = shallowRef<ChatError | null>(null);
  let conversation: Conversation | null = null; // what the next question continues
  let es: EventSource | null = null;
  let interrupt: (() => void) | null = null; // how the current answer ends if it is stopped

  function close() {
    if (es) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
      es = null;
    }
    interrupt = null;
  }

  function stop() {
    if (!es) return;
    const ending = interrupt;
    close();
    ending?.();
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
    conversationId.value = turn.value = rating.value = null;
    feedbackError.value = null;
  }

  function reset() {
    close();
    history.value = [];
    conversation = null;
    clearAnswer();
    state.value = "idle";
  }

  function token() {
    return typeof options.accessToken === "function" ? options.accessToken() : options.accessToken;
  }

  function ask(query: string) {
    const q = query.trim();
    if (!q) return;
    const ending = interrupt; // an answer still streaming ends here, unfinished
    close();
    ending?.();
    clearAnswer();
    question.value = q;
    const continuing = options.conversation ?? true;
    const sent = continuing ? conversation : null;
    // The server supplies a continued conversation's turns; the composable's own copy goes only without an id.
    const turns =
      continuing && (!sent || options.sendHistory) ? history.value.slice(-(options.maxHistoryMessages ?? 12)) : [];
    const source = new EventSource(buildStreamUrl(options.baseUrl, q, turns, options.userEmail, token(), sent?.id));
    es = source;
    state.value = "connecting";
    let lastSeq = 0;
    let awaitingResume = false;
    let opened = false; // an event of the answer's own stream arrived
    let refused = false; // its first event was a refusal
    const settle = (end: Ending) => {
      const next = nextTurns(conversation, sent, end);
      conversation = next.conversation;
      if (next.answer) {
        conversationId.value = next.answer.conversationId;
        turn.value = next.answer.turn;
      }
    };
    interrupt = () => settle({ kind: "unfinished" });

    source.onopen = () => {
      state.value = "streaming";
    };
    source.onmessage = (event: MessageEvent<string>) => {
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
        error.value = {
          code: typeof data.code === "string" ? data.code : "internal_error",
          message: data.error,
          retryAfter: typeof data.retryAfter === "number" ? data.retryAfter : undefined,
        };
        close(); // partial text stays (upstream_interrupted, stream_expired)
        // A refused resume (after events of the answer) says nothing of how the answer itself ended.
        settle({ kind: refused ? "refused" : refusal ? "unfinished" : "failed" });
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
        settle({ kind: "done", conversationId: event.conversationId });
        if (continuing) {
          const reply: ChatMessage =
            conversationId.value !== null && turn.value !== null
              ? {
                  role: "assistant",
                  content: answer.value,
                  conversationId: conversationId.value,
                  turn: turn.value,
                  rating: null,
                }
              : { role: "assistant", content: answer.value };
          history.value = [...history.value, { role: "user", content: q }, reply];
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
      settle({ kind: "unfinished" });
      state.value = "error";
    };
  }

  /** Rate an answer (default: the current one); resolves true once the server stored it. */
  async function rate(value: Rating, target?: AnswerRef): Promise<boolean> {
    const current =
      conversationId.value !== null && turn.value !== null
        ? { conversationId: conversationId.value, turn: turn.value }
        : null;
    const answerRef = target ?? current;
    if (!answerRef) return false;
    const error = await postFeedback(options.baseUrl, answerRef, value, token());
    const same = (a: { conversationId?: string | null; turn?: number | null }) =>
      a.conversationId === answerRef.conversationId && a.turn === answerRef.turn;
    if (same({ conversationId: conversationId.value, turn: turn.value })) {
      if (!error) rating.value = value;
      feedbackError.value = error;
    }
    if (!error) history.value = history.value.map((m) => (same(m) ? { ...m, rating: value } : m));
    return error === null;
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
    conversationId: readonly(conversationId),
    turn: readonly(turn),
    rating: readonly(rating),
    feedbackError,
    ask,
    stop,
    reset,
    rate,
  };
}
