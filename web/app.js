/*
 * Warren chat page.
 *
 * Talks to the server with plain fetch (sign-in) and with STOMP (@stomp/stompjs 7) over SockJS
 * (sockjs-client 1.6.1). Every piece of text that comes from a user or the server is put on the page with
 * textContent, never as HTML.
 *
 * Test hooks: stable ids / data-testid attributes, and window.warren (see the bottom of this file).
 */
(() => {
  'use strict';

  const ENDPOINT = '/chat-websocket';
  const CHAT_CHANNEL = '/user/topic/reply';
  const ERROR_CHANNEL = '/user/queue/errors';
  const SEND_DESTINATION = '/message/chat';
  // Reconnect after 1 s, then 2, 4, 8 … up to 30 s between tries; back to 1 s after a successful connect.
  const RECONNECT_DELAY_MS = 1000;
  const MAX_RECONNECT_DELAY_MS = 30000;
  const DISCONNECT_GRACE_MS = 2000;
  const TRANSPORTS = [
    'websocket', 'xhr-streaming', 'eventsource', 'iframe-eventsource', 'htmlfile', 'iframe-htmlfile',
    'xhr-polling', 'iframe-xhr-polling', 'jsonp-polling',
  ];

  const ERROR_TEXT = {
    'unknown-user': 'There is no user with that name.',
    'too-large': 'The message is too large.',
    'mailbox-full': "The receiver's mailbox is full.",
    'broker-unavailable': 'The message service is unavailable right now. Try again in a moment.',
    'invalid-message': 'The message was not accepted.',
    'rate-limited': 'You are sending too fast. Wait a moment and try again.',
  };

  const el = (id) => document.getElementById(id);
  const ui = {
    loading: el('loading'),
    pageError: el('page-error'),
    account: el('account'),
    currentUser: el('current-user'),
    signOut: el('sign-out'),
    signinCard: el('signin-card'),
    noUsers: el('no-users'),
    addUserHint: el('add-user-hint'),
    signinForm: el('signin-form'),
    username: el('username'),
    password: el('password'),
    signinError: el('signin-error'),
    signinButton: el('signin-button'),
    chat: el('chat'),
    dot: el('connection-dot'),
    status: el('connection-status'),
    transportWrap: el('transport-wrap'),
    transport: el('transport'),
    transportSelect: el('transport-select'),
    connect: el('connect'),
    disconnect: el('disconnect'),
    chatError: el('chat-error'),
    chatErrorText: el('chat-error-text'),
    chatErrorDismiss: el('chat-error-dismiss'),
    messages: el('messages'),
    messagesEmpty: el('messages-empty'),
    composeForm: el('compose-form'),
    receiver: el('receiver'),
    message: el('message'),
    send: el('send'),
  };

  const state = {
    user: null,
    client: null,
    sock: null,
    generation: 0,
    connected: false,
    subscribed: false,
    seenIds: new Set(),
    stopping: null, // promise of a disconnect under way
    pending: new Map(), // receipt id -> outgoing <li>
    sendCounter: 0,
  };

  // -- small helpers ------------------------------------------------------------------------------------------

  function show(node, visible) {
    node.hidden = !visible;
  }

  function setText(node, text) {
    node.textContent = text == null ? '' : String(text);
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (_) {
      return null;
    }
  }

  async function postJson(path, body) {
    const response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body || {}),
    });
    return { response, data: await readJson(response) };
  }

  function describeServerError(data, fallback) {
    if (data && typeof data.message === 'string' && data.message) return data.message;
    if (data && typeof data.error === 'string' && ERROR_TEXT[data.error]) return ERROR_TEXT[data.error];
    return fallback;
  }

  function formatTime(ts) {
    const date = new Date(typeof ts === 'number' ? ts : Date.now());
    const today = new Date();
    const sameDay = date.toDateString() === today.toDateString();
    const time = date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
    return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
  }

  function pageError(text) {
    setText(ui.pageError, text);
    show(ui.pageError, Boolean(text));
  }

  function chatError(text) {
    setText(ui.chatErrorText, text);
    show(ui.chatError, Boolean(text));
  }

  function signinError(text) {
    setText(ui.signinError, text);
    show(ui.signinError, Boolean(text));
  }

  // -- transport choice ---------------------------------------------------------------------------------------

  function initialTransport() {
    const wanted = new URLSearchParams(window.location.search).get('transport');
    if (wanted && TRANSPORTS.includes(wanted)) return wanted;
    return '';
  }

  function chosenTransport() {
    const value = ui.transportSelect.value;
    return TRANSPORTS.includes(value) ? value : '';
  }

  function rememberTransportInUrl(transport) {
    const url = new URL(window.location.href);
    if (transport) url.searchParams.set('transport', transport);
    else url.searchParams.delete('transport');
    window.history.replaceState(null, '', url);
  }

  // -- views --------------------------------------------------------------------------------------------------

  function showSignedOut(me) {
    state.user = null;
    show(ui.loading, false);
    show(ui.account, false);
    show(ui.chat, false);
    show(ui.signinCard, true);
    const noUsers = me && me.users_configured === 0;
    setText(ui.addUserHint, (me && me.add_user_hint) || 'python -m app users add NAME');
    show(ui.noUsers, Boolean(noUsers));
    ui.password.value = '';
    (ui.username.value ? ui.password : ui.username).focus();
  }

  function showSignedIn(user) {
    state.user = user;
    show(ui.loading, false);
    show(ui.signinCard, false);
    signinError('');
    setText(ui.currentUser, user);
    show(ui.account, true);
    show(ui.chat, true);
    ui.receiver.focus();
  }

  function clearConversation() {
    ui.messages.replaceChildren();
    state.seenIds.clear();
    state.pending.clear();
    show(ui.messagesEmpty, true);
    chatError('');
    ui.receiver.value = '';
    ui.message.value = '';
  }

  function setConnectionState(name, label) {
    if (name !== 'connected') {
      state.subscribed = false;
      delete ui.status.dataset.subscribed;
    }
    ui.status.dataset.state = name;
    ui.dot.dataset.state = name;
    setText(ui.status, label);
    const transport = state.connected && state.sock ? state.sock.transport : null;
    setText(ui.transport, transport || '');
    show(ui.transportWrap, Boolean(transport));
    const active = Boolean(state.client);
    ui.connect.disabled = active;
    ui.disconnect.disabled = !active;
    ui.send.disabled = !state.connected;
  }

  // -- messages -----------------------------------------------------------------------------------------------

  function nearBottom() {
    const list = ui.messages;
    return list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  }

  function appendItem(item) {
    const stick = nearBottom();
    ui.messages.appendChild(item);
    show(ui.messagesEmpty, false);
    if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function messageItem({ direction, id, from, to, content, ts }) {
    const item = document.createElement('li');
    item.className = `message message-${direction}`;
    item.dataset.testid = 'message';
    item.setAttribute('data-testid', 'message');
    item.dataset.direction = direction;
    if (id) item.dataset.id = id;
    item.dataset.from = from;
    item.dataset.to = to;

    const meta = document.createElement('div');
    meta.className = 'message-meta';

    const who = document.createElement('span');
    who.className = 'message-from';
    who.setAttribute('data-testid', 'message-from');
    setText(who, direction === 'in' ? from : `You → ${to}`);
    meta.appendChild(who);

    const time = document.createElement('time');
    time.className = 'message-time';
    time.setAttribute('data-testid', 'message-time');
    const when = new Date(typeof ts === 'number' ? ts : Date.now());
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    setText(time, formatTime(ts));
    meta.appendChild(time);

    if (direction === 'in') {
      const reply = document.createElement('button');
      reply.type = 'button';
      reply.className = 'message-reply';
      reply.setAttribute('data-testid', 'message-reply');
      setText(reply, 'Reply');
      reply.addEventListener('click', () => {
        ui.receiver.value = from;
        ui.message.focus();
      });
      meta.appendChild(reply);
    } else {
      const status = document.createElement('span');
      status.className = 'message-status';
      status.setAttribute('data-testid', 'message-status');
      meta.appendChild(status);
    }

    const body = document.createElement('div');
    body.className = 'message-content';
    body.setAttribute('data-testid', 'message-content');
    setText(body, content);

    item.append(meta, body);
    return item;
  }

  function setOutgoingStatus(item, status, text) {
    item.dataset.status = status;
    const node = item.querySelector('.message-status');
    if (node) setText(node, text);
  }

  function receiveMessage(frame) {
    let data;
    try {
      data = JSON.parse(frame.body);
    } catch (_) {
      data = null;
    }
    if (!data || typeof data !== 'object') {
      chatError('Received a message this page cannot read.');
      return;
    }
    const id = data.id == null ? '' : String(data.id);
    if (id) {
      if (state.seenIds.has(id)) return; // a redelivery of a message already shown
      state.seenIds.add(id);
    }
    appendItem(messageItem({
      direction: 'in',
      id,
      from: String(data.from ?? ''),
      to: String(data.to ?? state.user ?? ''),
      content: String(data.content ?? ''),
      ts: Number(data.ts) || Date.now(),
    }));
  }

  function receiveRefusal(frame) {
    let data;
    try {
      data = JSON.parse(frame.body);
    } catch (_) {
      data = { message: frame.body };
    }
    const text = describeServerError(data, 'The server refused the message.');
    const receipt = data && data['receipt-id'];
    const item = receipt ? state.pending.get(receipt) : null;
    if (item) {
      state.pending.delete(receipt);
      setOutgoingStatus(item, 'failed', `Not sent: ${text}`);
    }
    chatError(text);
  }

  function sendMessage(receiver, content) {
    const client = state.client;
    if (!client || !state.connected) {
      chatError('Not connected. Connect, then send again.');
      return false;
    }
    state.sendCounter += 1;
    const receipt = `send-${Date.now().toString(36)}-${state.sendCounter}`;
    const item = messageItem({ direction: 'out', from: state.user, to: receiver, content, ts: Date.now() });
    setOutgoingStatus(item, 'sending', 'Sending…');
    try {
      client.watchForReceipt(receipt, () => {
        if (state.pending.get(receipt) === item) {
          state.pending.delete(receipt);
          setOutgoingStatus(item, 'sent', 'Sent');
        }
      });
      client.publish({
        destination: SEND_DESTINATION,
        headers: { receipt, 'content-type': 'application/json' },
        body: JSON.stringify({ receiver, msg: content }),
      });
    } catch (error) {
      chatError(`Could not send: ${error.message || error}`);
      return false;
    }
    state.pending.set(receipt, item);
    appendItem(item);
    return true;
  }

  function abandonPending() {
    for (const item of state.pending.values()) {
      setOutgoingStatus(item, 'unconfirmed', 'Not confirmed: the connection closed');
    }
    state.pending.clear();
  }

  // -- connection ---------------------------------------------------------------------------------------------

  function connect() {
    if (state.client || !state.user) return;
    if (!window.SockJS || !window.StompJs) {
      chatError('The chat client libraries did not load. Ask the operator to run "npm install" in web/.');
      return;
    }
    chatError('');
    const generation = ++state.generation;
    const transport = chosenTransport();
    const sockOptions = transport ? { transports: [transport] } : {};
    const current = () => generation === state.generation;

    const client = new window.StompJs.Client({
      webSocketFactory: () => {
        const sock = new window.SockJS(ENDPOINT, null, sockOptions);
        if (current()) state.sock = sock;
        return sock;
      },
      reconnectDelay: RECONNECT_DELAY_MS,
      reconnectTimeMode: window.StompJs.ReconnectionTimeMode.EXPONENTIAL,
      maxReconnectDelay: MAX_RECONNECT_DELAY_MS,
      connectionTimeout: 20000,
      heartbeatIncoming: 20000,
      heartbeatOutgoing: 20000,
      debug: () => {},
    });

    client.onConnect = (frame) => {
      if (!current()) return;
      state.connected = true;
      chatError('');
      const named = frame.headers['user-name'];
      if (named && named !== state.user) {
        state.user = named;
        setText(ui.currentUser, named);
      }
      client.subscribe(ERROR_CHANNEL, receiveRefusal);
      // The receipt says the server has taken the subscription: from then on mail reaches this page.
      const receipt = `subscribe-${generation}-${Date.now().toString(36)}`;
      client.watchForReceipt(receipt, () => {
        if (current() && state.connected) {
          state.subscribed = true;
          ui.status.dataset.subscribed = 'true';
        }
      });
      client.subscribe(CHAT_CHANNEL, receiveMessage, { receipt });
      setConnectionState('connected', 'Connected');
    };

    client.onStompError = (frame) => {
      if (!current()) return;
      const reason = frame.headers.message || 'error';
      if (reason === 'not-signed-in') {
        // The session cookie is gone or expired: stop retrying and ask for the password again.
        stopClient();
        clearConversation();
        showSignedOut(null);
        signinError('Your session has ended. Please sign in again.');
        return;
      }
      const detail = (frame.body || '').trim();
      chatError(`The server refused the connection: ${detail || reason}`);
    };

    client.onWebSocketClose = (event) => {
      if (!current()) return;
      const wasConnected = state.connected;
      state.connected = false;
      abandonPending();
      if (!client.active) return;
      const why = event && (event.reason || event.code) ? ` (${event.reason || event.code})` : '';
      if (!wasConnected) {
        const using = transport ? ` using ${transport}` : '';
        chatError(`Could not connect to the chat server${using}${why}. Retrying…`);
      }
      setConnectionState('reconnecting', wasConnected ? 'Connection lost, reconnecting…' : 'Reconnecting…');
    };

    client.onWebSocketError = () => {
      // Details follow in onWebSocketClose; browsers do not expose more.
    };

    state.client = client;
    setConnectionState('connecting', 'Connecting…');
    client.activate();
  }

  /**
   * Stop the current client (if any). The page says "Disconnecting…" until the connection is really closed
   * (the server acknowledged DISCONNECT, or a grace period passed and the socket was dropped).
   * Returns a promise that settles then; calling it again while a stop is under way returns the same promise.
   */
  function stopClient() {
    const client = state.client;
    if (!client) return state.stopping || Promise.resolve();
    state.generation += 1; // late events of the old client are ignored from here on
    state.client = null;
    state.sock = null;
    state.connected = false;
    abandonPending();
    setConnectionState('disconnecting', 'Disconnecting…');
    const graceful = client.deactivate();
    const timeout = new Promise((resolve) => setTimeout(resolve, DISCONNECT_GRACE_MS));
    const stopping = Promise.race([graceful, timeout])
      .then(() => {
        if (client.active || (client.webSocket && client.webSocket.readyState !== 3)) {
          return client.deactivate({ force: true });
        }
        return undefined;
      })
      .catch(() => undefined)
      .then(() => {
        if (state.stopping === stopping) state.stopping = null;
        if (!state.client) setConnectionState('disconnected', 'Disconnected');
      });
    state.stopping = stopping;
    return stopping;
  }

  // -- sign in / out ------------------------------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const username = ui.username.value.trim();
    const password = ui.password.value;
    if (!username || !password) {
      signinError('Enter your username and password.');
      return;
    }
    signinError('');
    ui.signinButton.disabled = true;
    try {
      const { response, data } = await postJson('/login', { username, password });
      if (response.ok && data && data.user) {
        ui.password.value = '';
        clearConversation();
        showSignedIn(data.user);
        connect();
        return;
      }
      if (response.status === 401) {
        signinError(describeServerError(data, 'Wrong username or password.'));
      } else {
        signinError(describeServerError(data, `Sign-in failed (HTTP ${response.status}).`));
      }
      ui.password.select();
    } catch (_) {
      signinError('Cannot reach the server. Check your connection and try again.');
    } finally {
      ui.signinButton.disabled = false;
    }
  }

  async function signOut() {
    ui.signOut.disabled = true;
    try {
      await stopClient();
      const { response, data } = await postJson('/logout', {});
      if (!response.ok) {
        pageError(describeServerError(data, `Sign-out failed (HTTP ${response.status}).`));
        return;
      }
      pageError('');
      clearConversation();
      showSignedOut(await loadMe());
    } catch (_) {
      pageError('Cannot reach the server to sign out. Try again.');
    } finally {
      ui.signOut.disabled = false;
    }
  }

  async function loadMe() {
    try {
      const response = await fetch('/api/me', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      return response.ok ? await readJson(response) : null;
    } catch (_) {
      return null;
    }
  }

  // -- wiring -------------------------------------------------------------------------------------------------

  function submitCompose(event) {
    event.preventDefault();
    const receiver = ui.receiver.value.trim();
    const content = ui.message.value;
    if (!receiver) {
      chatError('Enter who the message is for.');
      ui.receiver.focus();
      return;
    }
    if (!content.trim()) {
      ui.message.focus();
      return;
    }
    if (sendMessage(receiver, content)) {
      ui.message.value = '';
      ui.message.focus();
    }
  }

  function wire() {
    ui.signinForm.addEventListener('submit', signIn);
    ui.signOut.addEventListener('click', signOut);
    ui.connect.addEventListener('click', connect);
    ui.disconnect.addEventListener('click', () => { stopClient(); });
    ui.chatErrorDismiss.addEventListener('click', () => chatError(''));
    ui.composeForm.addEventListener('submit', submitCompose);
    ui.message.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey
          && !event.isComposing) {
        event.preventDefault();
        ui.composeForm.requestSubmit();
      }
    });
    ui.transportSelect.value = initialTransport();
    ui.transportSelect.addEventListener('change', () => {
      rememberTransportInUrl(chosenTransport());
      if (state.client) {
        stopClient().then(connect);
      }
    });
  }

  async function start() {
    wire();
    setConnectionState('disconnected', 'Disconnected');
    if (!window.SockJS || !window.StompJs) {
      pageError('The chat client libraries did not load. Ask the operator to run "npm install" in web/.');
    }
    const me = await loadMe();
    if (!me) {
      show(ui.loading, false);
      pageError('Cannot reach the Warren server. Reload the page to try again.');
      return;
    }
    if (me.user) {
      showSignedIn(me.user);
      connect();
    } else {
      showSignedOut(me);
    }
  }

  window.warren = Object.freeze({
    /** The SockJS transport of the open connection ("websocket", "xhr-polling", …), or null. */
    transport: () => (state.connected && state.sock ? state.sock.transport : null),
    /** True while the STOMP session is connected and subscribed. */
    connected: () => state.connected,
    /** True once the server has confirmed (RECEIPT) the subscription to this user's chat channel. */
    subscribed: () => state.connected && state.subscribed,
    /** The signed-in user, or null. */
    user: () => state.user,
    /** Disconnect like the Disconnect button; resolves when the connection is closed. */
    disconnect: () => stopClient(),
  });

  start();
})();
