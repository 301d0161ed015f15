// The queue of open reports, oldest first: each dismissed, its message
// deleted for every member, or its user suspended, with one click (each
// action lands in the audit log).
import { useEffect, useState } from "preact/hooks";
import { AdminApi, Report, ReportAction } from "./api";

const EVERY_MS = 5_000;

export function Reports({ api, onAction }: { api: AdminApi; onAction: () => void }) {
  const [reports, setReports] = useState<Report[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = async () => {
    try {
      setReports((await api.reports()).reports);
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
  const resolve = async (r: Report, action: ReportAction) => {
    if (action === "suspend_user" && !confirm(`Suspend ${r.user}? They are signed out everywhere.`)) return;
    try {
      await api.resolve(r.id, action);
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
      {reports && reports.length === 0 && <p data-testid="reports-none">No open reports.</p>}
      {reports && reports.length > 0 && (
        <table data-testid="reports">
          <thead>
            <tr>
              <th>reported</th>
              <th>by</th>
              <th>about</th>
              <th>reason</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {reports.map((r) => (
              <tr key={r.id} data-testid="report" data-id={r.id}>
                <td>{new Date(r.created_at).toLocaleString()}</td>
                <td>{r.reporter}</td>
                <td>
                  {r.user}
                  {r.message !== undefined && (
                    <span>
                      {" "}
                      (message {String(r.message)} in {r.conversation})
                    </span>
                  )}
                </td>
                <td>{r.reason}</td>
                <td>
                  <button type="button" data-testid="dismiss" onClick={() => void resolve(r, "dismiss")}>
                    Dismiss
                  </button>{" "}
                  {r.message !== undefined && (
                    <button type="button" data-testid="delete-message" onClick={() => void resolve(r, "delete_message")}>
                      Delete message
                    </button>
                  )}{" "}
                  <button type="button" data-testid="suspend-user" onClick={() => void resolve(r, "suspend_user")}>
                    Suspend {r.user}
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
