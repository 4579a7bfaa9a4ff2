// The web chat: send text or a button's action to /api/chat, render replies and buttons.
(function () {
  "use strict";
  var log = document.getElementById("log");
  var form = document.getElementById("composer");
  var input = document.getElementById("text");
  var send = document.getElementById("send");
  var userKey = "xiaobao-user";
  var user = window.localStorage.getItem(userKey);
  if (!user) {
    user = "web-" + Math.random().toString(36).slice(2) + Date.now().toString(36);
    window.localStorage.setItem(userKey, user);
  }

  function addMessage(text, who) {
    var div = document.createElement("div");
    div.className = "msg " + who;
    div.textContent = text;
    log.appendChild(div);
    div.scrollIntoView({ block: "end" });
    return div;
  }

  function addReply(reply) {
    var div = addMessage(reply.text, "bot");
    if (reply.buttons && reply.buttons.length) {
      var row = document.createElement("div");
      row.className = "buttons";
      reply.buttons.forEach(function (b) {
        var btn = document.createElement("button");
        btn.type = "button";
        btn.textContent = b.label;
        btn.addEventListener("click", function () { post({ action: b.action }, b.label); });
        row.appendChild(btn);
      });
      div.appendChild(row);
    }
  }

  function post(payload, shown) {
    if (shown) { addMessage(shown, "me"); }
    payload.user = user;
    send.disabled = true;
    return fetch("/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload)
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) { throw new Error(body.error || "请求失败"); }
        body.replies.forEach(addReply);
      });
    }).catch(function () {
      addMessage("网络好像不太顺畅，请稍后再试。着急的话请拨打12378。", "bot error");
    }).then(function () { send.disabled = false; input.focus(); });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) { input.focus(); return; }
    input.value = "";
    post({ text: text }, text);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  post({ action: "start" });
}());
