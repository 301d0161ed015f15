// Searching the history: a box with filters above the conversation list;
// results with their matched words marked; a click opens the message in
// its conversation, with the history around it loaded.

import { useState } from "preact/hooks";
import { Chat, Message } from "./chat";

interface Result {
  message: Message;
  highlights: string[];
}

export function SearchBox({ chat }: { chat: Chat }) {
  const [q, setQ] = useState("");
  const [from, setFrom] = useState("");
  const [has, setHas] = useState("");
  const [results, setResults] = useState<Result[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const run = async (cursor?: string) => {
    const params = new URLSearchParams();
    if (q.trim()) params.set("q", q.trim());
    if (from.trim()) params.set("from", from.trim());
    if (has) params.set("has", has);
    if (cursor) params.set("cursor", cursor);
    if (![...params.keys()].some((k) => k !== "cursor")) {
      setResults(null);
      return;
    }
    try {
      const body = await chat.request("GET", `/v1/search?${params}`);
      setResults((old) => (cursor && old ? [...old, ...body.results] : body.results));
      setNext(body.next_cursor ?? null);
      setError(null);
    } catch (e) {
      setError((e as Error).message);
    }
  };

  return (
    <div class="search">
      <form
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          void run();
        }}
      >
        <input
          data-testid="search-input"
          type="search"
          aria-label="Search messages"
          placeholder="Search messages"
          value={q}
          onInput={(e) => setQ(e.currentTarget.value)}
        />
        <details>
          <summary>Filters</summary>
          <input data-testid="search-from" aria-label="From" placeholder="from (user id)" value={from} onInput={(e) => setFrom(e.currentTarget.value)} />
          <select data-testid="search-has" aria-label="Has" value={has} onChange={(e) => setHas(e.currentTarget.value)}>
            <option value="">anything</option>
            <option value="attachment">a file</option>
            <option value="link">a link</option>
          </select>
        </details>
        <button type="submit">Search</button>
      </form>
      {error && <p class="error">{error}</p>}
      {results && (
        <ol class="results" aria-label="Search results">
          {results.length === 0 && <li class="none">Nothing found.</li>}
          {results.map((r) => {
            const c = chat.conversations.get(r.message.conversation);
            return (
              <li key={r.message.id}>
                <button
                  type="button"
                  data-testid="search-result"
                  data-id={r.message.id}
                  onClick={() => {
                    location.hash = `#/c/${encodeURIComponent(r.message.conversation)}`;
                    void chat.jumpTo(r.message.conversation, r.message.id);
                  }}
                >
                  <span class="where">
                    {c ? chat.title(c) : r.message.conversation} · {r.message.sender} · {new Date(r.message.ts).toLocaleString()}
                  </span>
                  {r.highlights.length ? (
                    // Escaped by the server, but for the <mark>s it adds.
                    <span class="snippet" dangerouslySetInnerHTML={{ __html: r.highlights[0] }} />
                  ) : (
                    <span class="snippet">{r.message.body}</span>
                  )}
                </button>
              </li>
            );
          })}
          {next && (
            <li>
              <button type="button" class="small" onClick={() => void run(next)}>
                More
              </button>
            </li>
          )}
        </ol>
      )}
    </div>
  );
}
