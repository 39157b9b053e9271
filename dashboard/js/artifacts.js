// Rendered images, fetched once with the token into blob URLs and shared by whoever shows them
// (the gallery, the Stream Bot's attachment). Reference counted: the URL is revoked when the
// last one lets go.

import { fetchBlob } from './api.js';

const blobs = new Map(); // sha256 -> { url, promise, refs }

/** Resolves to a blob URL for the artifact, or null when it cannot be had. */
export function acquireArtifact(sha) {
  let entry = blobs.get(sha);
  if (!entry) {
    entry = { url: null, promise: null, refs: 0 };
    blobs.set(sha, entry);
    const mine = entry;
    entry.promise = fetchBlob('/api/render/artifacts/' + encodeURIComponent(sha)).then((blob) => {
      if (!blob || mine.refs <= 0) {
        if (blobs.get(sha) === mine) blobs.delete(sha); // tried again on a later render
        return null;
      }
      mine.url = URL.createObjectURL(blob);
      return mine.url;
    });
  }
  entry.refs += 1;
  return entry.promise;
}

export function releaseArtifact(sha) {
  const entry = blobs.get(sha);
  if (!entry) return;
  entry.refs -= 1;
  if (entry.refs > 0) return;
  blobs.delete(sha);
  if (entry.url) URL.revokeObjectURL(entry.url);
}
