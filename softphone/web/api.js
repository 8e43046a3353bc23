// The soft phone's local API (/api/v1): JSON requests and the event WebSocket.

const token = new URLSearchParams(location.search).get("token");

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function request(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new ApiError(response.status, error.code || "http_error",
                       error.message || response.statusText);
  }
  return data;
}

// Calls onEvent(event) for every event, onState("connected" | "disconnected"); reconnects
// with a growing delay. The first event of each connection is {"type": "hello", ...}.
export function subscribe(onEvent, onState) {
  let delay = 500;
  const connect = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/events/ws${query}`);
    socket.onopen = () => { delay = 500; onState("connected"); };
    socket.onmessage = (message) => onEvent(JSON.parse(message.data));
    socket.onclose = () => {
      onState("disconnected");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  connect();
}
