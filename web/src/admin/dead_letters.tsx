// Webhook deliveries given up after their retries: listed newest first, each
// sent again (same delivery id and body) with one click.
import { useEffect, useState } from "preact/hooks";
import { AdminApi, DeadLetter } from "./api";

const EVERY_MS = 5_000;

export function DeadLetters({ api, onAction }: { api: AdminApi; onAction: () => void }) {
  const [dead, setDead] = useState<DeadLetter[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = async () => {
    try {
      setDead((await api.deadLetters()).dead);
      setError(null);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  };
  useEffect(() => {
    void load();
    const timer = setInterval(() => void load(), EVERY_MS);
    return () => clearInterval(timer);
  }, [api]);
  const replay = async (id: string) => {
    try {
      await api.replay(id);
      onAction();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
    await load();
  };
  return (
    <div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {dead && dead.length === 0 && <p data-testid="dead-none">None: every delivery went out.</p>}
      {dead && dead.length > 0 && (
        <table data-testid="dead-letters">
          <thead>
            <tr>
              <th>failed</th>
              <th>hook</th>
              <th>event</th>
              <th>attempts</th>
              <th>last error</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {dead.map((d) => (
              <tr key={d.id} data-testid="dead-letter" data-delivery={d.delivery}>
                <td>{new Date(d.failed_at).toLocaleString()}</td>
                <td>{d.hook}</td>
                <td>{d.event}</td>
                <td>{d.attempts}</td>
                <td>{d.error}</td>
                <td>
                  <button type="button" data-testid="replay" onClick={() => void replay(d.id)}>
                    Replay
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
