/*
 * Test harness for tests/browser/test_transports.py: one STOMP client (@stomp/stompjs 7) over SockJS forced onto
 * a single transport, driven from Playwright through window.harness. Received messages are shown with
 * textContent, the way a chat page must show them: markup in a message is text, never code.
 */
(function () {
  'use strict';

  const state = { client: null, sock: null, received: [], errors: [], closes: [], receipts: 0 };
  /** Every promise handed to Playwright settles: page.evaluate itself has no timeout. */
  const TIMEOUT_MS = 20000;

  function within(what, promise) {
    return Promise.race([
      promise,
      new Promise((_resolve, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${TIMEOUT_MS} ms`)), TIMEOUT_MS)),
    ]);
  }

  async function signIn(username, password) {
    const response = await fetch('/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    if (!response.ok) throw new Error(`sign-in failed: ${response.status}`);
    return (await response.json()).user;
  }

  function show(message) {
    const item = document.createElement('li');
    item.textContent = message.content;
    item.dataset.id = message.id;
    document.getElementById('messages').appendChild(item);
  }

  /** Connect over `transport` and subscribe; resolves with the transport sockjs-client reports. */
  function connect(transport, ack) {
    const mode = ack || 'auto';
    return within(`connect over ${transport}`, new Promise((resolve, reject) => {
      const client = new StompJs.Client({
        webSocketFactory: () => {
          state.sock = new SockJS('/chat-websocket', null, { transports: [transport] });
          return state.sock;
        },
        reconnectDelay: 0,
        heartbeatIncoming: 10000,
        heartbeatOutgoing: 10000,
        debug: () => {},
      });
      client.onConnect = () => {
        const receipt = `subscribed-${Date.now()}`;
        client.watchForReceipt(receipt, () => {
          document.getElementById('transport').textContent = state.sock.transport;
          resolve(state.sock.transport);
        });
        client.subscribe('/user/topic/reply', (frame) => {
          const message = JSON.parse(frame.body);
          state.received.push({ id: message.id, from: message.from, content: message.content });
          show(message);
          if (mode !== 'auto') frame.ack();
        }, { ack: mode, receipt });
      };
      client.onStompError = (frame) => {
        state.errors.push(`${frame.headers.message}: ${frame.body}`);
        reject(new Error(frame.headers.message));
      };
      client.onWebSocketClose = (event) => {
        state.closes.push(event.code);
        reject(new Error(`closed ${event.code} before subscribing`));
      };
      state.client = client;
      client.activate();
    }));
  }

  /** Send one chat message; resolves when the server's RECEIPT says it was accepted. */
  function send(receiver, text) {
    return within('send', new Promise((resolve) => {
      state.receipts += 1;
      const receipt = `sent-${state.receipts}`;
      state.client.watchForReceipt(receipt, () => resolve(true));
      state.client.publish({
        destination: '/message/chat',
        headers: { receipt, 'content-type': 'application/json' },
        body: JSON.stringify({ receiver, msg: text }),
      });
    }));
  }

  async function disconnect() {
    if (state.client) await within('disconnect', state.client.deactivate());
  }

  window.harness = {
    signIn,
    connect,
    send,
    disconnect,
    received: () => state.received,
    shown: () => Array.from(document.querySelectorAll('#messages li'), (item) => item.textContent),
    errors: () => state.errors,
    transport: () => (state.sock ? state.sock.transport : null),
  };
})();
