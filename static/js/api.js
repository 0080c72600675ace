// The app's HTTP client: same-origin session auth with Django's CSRF token, JSON errors as Error.

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (method !== "GET") init.headers["X-CSRFToken"] = csrfToken();
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.arrayBuffer();
  if (!response.ok) throw new ApiError((data && data.error) || `HTTP ${response.status}`, response.status);
  return data;
}

// Upload one file with progress (fetch has no upload progress, XHR does).
export function uploadFile(projectId, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/projects/${projectId}/images/`);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON: reported below */ }
      if (xhr.status === 201) resolve(data[0]);
      else reject(new ApiError((data && data.error) || `HTTP ${xhr.status}`, xhr.status));
    };
    xhr.onerror = () => reject(new ApiError("network error", 0));
    const form = new FormData();
    form.append("file", file);
    xhr.send(form);
  });
}
