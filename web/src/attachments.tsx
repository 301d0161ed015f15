// Files in messages: uploads from the composer (a button, drag and drop,
// paste), each with its progress, and what a message shows of its files
// (image thumbnails that open a viewer, cards for the rest).

import { useEffect, useState } from "preact/hooks";
import { Attachment, Chat } from "./chat";

/** A file being uploaded, or uploaded, for the next message. */
export interface Upload {
  key: string;
  name: string;
  size: number;
  /** 0 to 1. */
  progress: number;
  /** The media id once stored. */
  id?: string;
  error?: string;
  xhr?: XMLHttpRequest;
}

/** "2.4 MB". */
export function humanSize(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB"];
  let v = n / 1000;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** Why an upload failed, in plain words. */
function reason(status: number, body: any): string {
  const code = body?.code;
  if (code === "too_large") return body?.message?.includes("pixels") ? "the image is too large to show" : "the file is too large";
  if (code === "quota_exceeded") return "you have no room left for files";
  if (code === "rate_limited") return "too many uploads; wait a minute";
  if (code === "bad_request") return body?.message ?? "the file was refused";
  return body?.message ?? `upload failed (${status || "no answer"})`;
}

/** The uploads of one composer. */
export function useUploads(chat: Chat) {
  const [uploads, setUploads] = useState<Upload[]>([]);
  const update = (key: string, patch: Partial<Upload>) =>
    setUploads((all) => all.map((u) => (u.key === key ? { ...u, ...patch } : u)));

  const add = async (files: Iterable<File>) => {
    const token = await chat.bearer();
    for (const file of files) {
      const key = `${Date.now()}-${Math.random()}`;
      const xhr = new XMLHttpRequest();
      const upload: Upload = { key, name: file.name || "pasted", size: file.size, progress: 0, xhr };
      setUploads((all) => [...all, upload]);
      xhr.open("POST", `/v1/media?name=${encodeURIComponent(upload.name)}`);
      xhr.setRequestHeader("authorization", `Bearer ${token}`);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) update(key, { progress: e.loaded / e.total });
      };
      xhr.onload = () => {
        let body: any = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // The status says enough.
        }
        if (xhr.status === 201 && body?.id) update(key, { id: body.id, progress: 1, xhr: undefined });
        else update(key, { error: reason(xhr.status, body), xhr: undefined });
      };
      xhr.onerror = () => update(key, { error: "the upload was cut off", xhr: undefined });
      xhr.send(file);
    }
  };
  const remove = (key: string) =>
    setUploads((all) => {
      all.find((u) => u.key === key)?.xhr?.abort();
      return all.filter((u) => u.key !== key);
    });
  return {
    uploads,
    add,
    remove,
    clear: () => setUploads([]),
    /** Ids of the uploads done. */
    ready: uploads.filter((u) => u.id).map((u) => u.id!),
    busy: uploads.some((u) => !u.id && !u.error),
  };
}

/** The composer's row of uploads. */
export function UploadChips({ uploads, remove }: { uploads: Upload[]; remove: (key: string) => void }) {
  if (!uploads.length) return null;
  return (
    <ul class="uploads">
      {uploads.map((u) => (
        <li key={u.key} data-testid="attachment-chip" data-done={u.id ? "yes" : "no"} class={u.error ? "failed" : ""}>
          <span class="name">{u.name}</span> <span class="size">{humanSize(u.size)}</span>
          {u.error ? (
            <span class="error" role="alert">
              {u.error}
            </span>
          ) : (
            <progress data-testid="upload-progress" max={1} value={u.progress} />
          )}
          <button type="button" class="small" aria-label={`Remove ${u.name}`} onClick={() => remove(u.key)}>
            ×
          </button>
        </li>
      ))}
    </ul>
  );
}

const SHOWN = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/** The long side of a preview, as the server's thumbnails. */
const PREVIEW = 320;

function previewSize(a: Attachment): { width: number; height: number } {
  const w = a.width ?? PREVIEW;
  const h = a.height ?? PREVIEW;
  const scale = Math.min(1, PREVIEW / Math.max(w, h));
  return { width: Math.round(w * scale), height: Math.round(h * scale) };
}

/** What a message shows of its files. */
export function Attachments({ list }: { list: Attachment[] }) {
  const [viewing, setViewing] = useState<Attachment | null>(null);
  return (
    <div class="attachments">
      {list.map((a) =>
        SHOWN.includes(a.content_type) && a.thumbnail_url ? (
          <button type="button" key={a.id} class="preview" aria-label={`Open ${a.name}`} onClick={() => setViewing(a)}>
            <img data-testid="attachment-image" src={a.thumbnail_url} alt={a.name} loading="lazy" {...previewSize(a)} />
          </button>
        ) : (
          <a key={a.id} class="file" data-testid="attachment-file" href={a.url} download={a.name}>
            <span class="icon" aria-hidden="true">
              📄
            </span>
            <span class="name">{a.name}</span>
            <span class="size">{humanSize(a.size)}</span>
          </a>
        ),
      )}
      {viewing && <Viewer a={viewing} close={() => setViewing(null)} />}
    </div>
  );
}

function Viewer({ a, close }: { a: Attachment; close: () => void }) {
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && close();
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [close]);
  return (
    <div class="viewer" data-testid="image-viewer" role="dialog" aria-label={a.name} onClick={(e) => e.target === e.currentTarget && close()}>
      <figure>
        <img src={a.url} alt={a.name} />
        <figcaption>
          {a.name} · {humanSize(a.size)} ·{" "}
          <a href={a.url} download={a.name}>
            Download
          </a>{" "}
          <button type="button" class="small" onClick={close}>
            Close
          </button>
        </figcaption>
      </figure>
    </div>
  );
}
