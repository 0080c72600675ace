// The project's websocket: reconnects with backoff and calls onReconnect so the page refetches what it
// may have missed (Channels delivers at most once).

export function connectProject(projectId, { onEvent, onState, onReconnect }) {
  let delay = 500;
  let everOpened = false;
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/projects/${projectId}/`);
    socket.onopen = () => {
      delay = 500;
      onState("live");
      if (everOpened && onReconnect) onReconnect();
      everOpened = true;
    };
    socket.onmessage = (message) => onEvent(JSON.parse(message.data));
    socket.onclose = () => {
      onState("offline");
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  open();
}
