/**
 * A source's `url` as a link target, only when it is an absolute http(s) URL.
 *
 * The server already drops anything else, but a page must not trust that: bound to `href`, a
 * `javascript:` URL runs in the page's origin when clicked. Anything that is not http(s) renders as text.
 */
export function httpUrl(url: unknown): string | undefined {
  if (typeof url !== "string" || /[\s\u0000-\u001f\u007f]/.test(url)) return undefined;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? url : undefined;
  } catch {
    return undefined;
  }
}
