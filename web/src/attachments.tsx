// Files in messages: uploads from the composer (a button, drag and drop
// onto the conversation, paste), each with its progress, and what a message
// shows of its files (image thumbnails that open a viewer, cards for the
// rest).

import { useEffect, useRef, useState } from "preact/hooks";
import { nodeLink } from "./api";
import { Attachment, Chat, Message } from "./chat";

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

/** At most this many files in one message (the server's limit). */
export const MAX_ATTACHMENTS = 10;

/** "2.4 MB". */
export function humanSize(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n / 1000;
  let u = 0;
  while (v >= 999.5 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v < 9.95 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** The bytes a server message names ("over the limit of 26214400 bytes"),
 * in human words. */
function limitIn(message: string | undefined, what: string): string {
  const m = message?.match(new RegExp(`${what} of (\\d+) bytes`));
  return m ? humanSize(Number(m[1])) : "";
}

/** Why an upload failed, in plain words. Errors are `{code, message}`
 * (also read nested in `error`, as some routes may answer). */
export function reason(status: number, json: any): string {
  const body = json?.error && typeof json.error === "object" ? json.error : json;
  const code: string | undefined = body?.code ?? { 413: "too_large", 429: "rate_limited" }[status];
  const message: string | undefined = body?.message;
  switch (code) {
    case "too_large": {
      if (message?.includes("pixels")) return "The image has too many pixels to be shown.";
      const limit = limitIn(message, "limit");
      return `The file is too large${limit ? ` (the limit is ${limit})` : ""}.`;
    }
    case "quota_exceeded": {
      const quota = limitIn(message, "quota");
      return `You have no room left for files${quota ? ` (your quota is ${quota})` : ""}: delete older messages with files, or send a smaller one.`;
    }
    case "rate_limited":
      return "Too many uploads at once: wait a minute and try again.";
    case "bad_request":
      return message?.includes("decoded") ? "The image is damaged and cannot be shown." : (message ?? "The file was refused.");
    case "unauthorized":
      return "You are signed out: sign in again.";
    case "unavailable":
      return "The file store is not answering: try again.";
  }
  if (status === 0) return "The upload was cut off: check the connection and try again.";
  return message ?? `The upload failed (${status}).`;
}

/** The files a paste carries (a screenshot, files copied in a file manager). */
function pastedFiles(data: DataTransfer | null): File[] {
  if (!data) return [];
  if (data.files.length) return Array.from(data.files);
  return Array.from(data.items)
    .filter((i) => i.kind === "file")
    .map((i) => i.getAsFile())
    .filter((f): f is File => f !== null);
}

/** Uploads the files a paste carries, if any (text is pasted as usual). */
export function pasteFiles(files: Uploads, e: ClipboardEvent) {
  const pasted = pastedFiles(e.clipboardData);
  if (!pasted.length) return;
  e.preventDefault();
  void files.add(pasted);
}

/** The uploads of one composer; uploads left unsent when it goes are taken
 * back (they would count against the quota for nothing). */
export function useUploads(chat: Chat) {
  const [uploads, setUploads] = useState<Upload[]>([]);
  const current = useRef<Upload[]>([]);
  current.current = uploads;
  const update = (key: string, patch: Partial<Upload>) =>
    setUploads((all) => all.map((u) => (u.key === key ? { ...u, ...patch } : u)));
  const takeBack = (u: Upload) => {
    u.xhr?.abort();
    if (u.id) void chat.request("DELETE", `/v1/media/${encodeURIComponent(u.id)}`).catch(() => undefined);
  };
  useEffect(() => () => current.current.forEach(takeBack), [chat]);

  const start = (upload: Upload, file: File, token: string) => {
    const xhr = new XMLHttpRequest();
    upload.xhr = xhr;
    xhr.open("POST", nodeLink(`/v1/media?name=${encodeURIComponent(upload.name)}`));
    xhr.setRequestHeader("authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (e) => {
      // Short of 1 until the server has answered (it checks the file).
      if (e.lengthComputable && e.total > 0) update(upload.key, { progress: Math.min(0.99, e.loaded / e.total) });
    };
    xhr.onload = () => {
      let body: any = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // The status says enough.
      }
      if (xhr.status === 201 && body?.id) update(upload.key, { id: body.id, progress: 1, xhr: undefined });
      else update(upload.key, { error: reason(xhr.status, body), xhr: undefined });
    };
    xhr.onerror = () => update(upload.key, { error: reason(0, null), xhr: undefined });
    xhr.send(file);
  };

  const add = async (files: Iterable<File>) => {
    const list = Array.from(files);
    if (!list.length) return;
    const fresh = list.map(
      (file, i): Upload => ({
        key: `${Date.now()}-${i}-${Math.random()}`,
        name: file.name || `pasted.${file.type.split("/")[1] ?? "bin"}`,
        size: file.size,
        progress: 0,
      }),
    );
    const room = MAX_ATTACHMENTS - current.current.length;
    fresh.forEach((u, i) => {
      if (i >= room) u.error = `At most ${MAX_ATTACHMENTS} files go in one message.`;
    });
    setUploads((all) => [...all, ...fresh]);
    let token: string;
    try {
      token = await chat.bearer();
    } catch {
      fresh.forEach((u) => !u.error && update(u.key, { error: reason(0, { code: "unauthorized" }) }));
      return;
    }
    fresh.forEach((u, i) => !u.error && start(u, list[i], token));
  };
  const remove = (key: string) => {
    const gone = current.current.find((u) => u.key === key);
    if (gone) takeBack(gone);
    setUploads((all) => all.filter((u) => u.key !== key));
  };
  return {
    uploads,
    add,
    remove,
    /** Sent: the uploads are the message's now. */
    clear: () => {
      current.current = [];
      setUploads([]);
    },
    /** The uploads done: their ids and names. */
    ready: uploads.filter((u) => u.id),
    busy: uploads.some((u) => !u.id && !u.error),
  };
}

export type Uploads = ReturnType<typeof useUploads>;

/** Props that make an element take dropped files (highlighted while files
 * are dragged over it). */
export function useDropZone(files: Uploads, enabled: boolean) {
  const [over, setOver] = useState(0);
  const hasFiles = (e: DragEvent) => enabled && !!e.dataTransfer?.types.includes("Files");
  return {
    dragging: over > 0,
    props: {
      onDragEnter: (e: DragEvent) => {
        if (!hasFiles(e)) return;
        e.preventDefault();
        setOver((n) => n + 1);
      },
      onDragOver: (e: DragEvent) => {
        if (!hasFiles(e)) return;
        e.preventDefault();
        if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
      },
      onDragLeave: (e: DragEvent) => {
        if (hasFiles(e)) setOver((n) => Math.max(0, n - 1));
      },
      onDrop: (e: DragEvent) => {
        setOver(0);
        if (!enabled || !e.dataTransfer?.files.length) return;
        e.preventDefault();
        void files.add(Array.from(e.dataTransfer.files));
      },
    },
  };
}

/** The composer's attach button. */
export function AttachButton({ files }: { files: Uploads }) {
  return (
    <label class="attach" title="Attach files">
      <span aria-hidden="true">📎</span>
      <input
        data-testid="attach-input"
        class="visually-hidden"
        type="file"
        multiple
        aria-label="Attach files"
        onChange={(e) => {
          const picked = e.currentTarget.files;
          if (picked?.length) void files.add(Array.from(picked));
          e.currentTarget.value = "";
        }}
      />
    </label>
  );
}

/** The composer's row of uploads. */
export function UploadChips({ files }: { files: Uploads }) {
  if (!files.uploads.length) return null;
  return (
    <ul class="uploads" aria-label="Files to send">
      {files.uploads.map((u) => (
        <li
          key={u.key}
          data-testid="attachment-chip"
          data-done={u.id ? "yes" : "no"}
          data-failed={u.error ? "yes" : undefined}
          class={u.error ? "failed" : u.id ? "done" : ""}
        >
          <span class="icon" aria-hidden="true">
            {iconFor(u.name)}
          </span>
          <span class="name" title={u.name}>
            {u.name}
          </span>
          <span class="size">{humanSize(u.size)}</span>
          {u.error ? (
            <span class="error" role="alert">
              {u.error}
            </span>
          ) : (
            <progress
              data-testid="upload-progress"
              max={1}
              value={u.progress}
              aria-label={u.id ? `${u.name} uploaded` : `Uploading ${u.name}`}
            />
          )}
          <button type="button" class="small remove" aria-label={`Remove ${u.name}`} title="Remove" onClick={() => files.remove(u.key)}>
            ×
          </button>
        </li>
      ))}
    </ul>
  );
}

/** One line for a message in the conversation list. */
export function summary(m: Message): string {
  if (m.deleted) return "message deleted";
  const files = m.attachments ?? [];
  if (m.body || !files.length) return m.body;
  return `📎 ${files.map((a) => a.name).join(", ")}`;
}

const SHOWN = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/** The long side of a preview, as the server's thumbnails. */
const PREVIEW = 320;

function previewSize(a: Attachment): { width: number; height: number } {
  const w = a.width || PREVIEW;
  const h = a.height || PREVIEW;
  const scale = Math.min(1, PREVIEW / Math.max(w, h));
  return { width: Math.max(1, Math.round(w * scale)), height: Math.max(1, Math.round(h * scale)) };
}

function iconFor(name: string, type = ""): string {
  const ext = name.toLowerCase().split(".").pop() ?? "";
  if (type.startsWith("image/") || ["png", "jpg", "jpeg", "gif", "webp", "svg", "bmp", "heic"].includes(ext)) return "🖼️";
  if (type.startsWith("video/") || ["mp4", "mov", "webm", "mkv", "avi"].includes(ext)) return "🎞️";
  if (type.startsWith("audio/") || ["mp3", "wav", "ogg", "flac", "m4a"].includes(ext)) return "🎵";
  if (type === "application/pdf" || ext === "pdf") return "📕";
  if (type.includes("zip") || ["zip", "gz", "tgz", "7z", "rar", "tar", "xz"].includes(ext)) return "🗜️";
  return "📄";
}

/** What a message shows of its files. */
export function Attachments({ list }: { list: Attachment[] }) {
  const [viewing, setViewing] = useState<Attachment | null>(null);
  return (
    <div class="attachments">
      {list.map((a) =>
        SHOWN.includes(a.content_type) && a.thumbnail_url ? (
          <button
            type="button"
            key={a.id}
            class="preview"
            aria-label={`Open ${a.name}`}
            title={`${a.name} · ${humanSize(a.size)}`}
            onClick={() => setViewing(a)}
          >
            <img data-testid="attachment-image" src={nodeLink(a.thumbnail_url)} alt={a.name} loading="lazy" {...previewSize(a)} />
          </button>
        ) : (
          <a key={a.id} class="file" data-testid="attachment-file" href={nodeLink(a.url)} download={a.name} title={`Download ${a.name}`}>
            <span class="icon" aria-hidden="true">
              {iconFor(a.name, a.content_type)}
            </span>
            <span class="name">{a.name}</span>
            <span class="size">{humanSize(a.size)}</span>
            <span class="get" aria-hidden="true">
              ⬇
            </span>
          </a>
        ),
      )}
      {viewing && <Viewer a={viewing} close={() => setViewing(null)} />}
    </div>
  );
}

/** The full image over the page: Esc, a click beside it or Close closes. */
function Viewer({ a, close }: { a: Attachment; close: () => void }) {
  const closer = useRef<HTMLButtonElement>(null);
  // The page re-renders on every event: the latest `close`, one listener.
  const closing = useRef(close);
  closing.current = close;
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    closer.current?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") {
        e.preventDefault();
        closing.current();
      }
    };
    addEventListener("keydown", onKey);
    return () => {
      removeEventListener("keydown", onKey);
      before?.focus?.();
    };
  }, []);
  return (
    <div
      class="viewer"
      data-testid="image-viewer"
      role="dialog"
      aria-modal="true"
      aria-label={a.name}
      onClick={(e) => e.target === e.currentTarget && close()}
    >
      <figure>
        <img src={nodeLink(a.url)} alt={a.name} />
        <figcaption>
          <span class="name">{a.name}</span>
          <span class="size">
            {a.width && a.height ? `${a.width} × ${a.height} · ` : ""}
            {humanSize(a.size)}
          </span>
          <a class="button" href={nodeLink(a.url)} download={a.name}>
            Download
          </a>
          <button type="button" ref={closer} aria-label="Close" onClick={close}>
            Close
          </button>
        </figcaption>
      </figure>
    </div>
  );
}
