// Entry point: switches between the log-in view and the app, wires the parts.

import { ApiError, currentSession, login, logout, onSessionChange, register } from "./api.js";
import { clearBatches, initBatches, loadBatches } from "./batches.js";
import { initForm, loadModels, regenerate } from "./form.js";
import { clearJobs, initJobs, loadJobs } from "./jobs.js";
import { $, announce } from "./util.js";

function showSignedIn(session) {
  $("#auth-view").hidden = true;
  $("#app-view").hidden = false;
  $("#logout").hidden = false;
  const who = $("#whoami");
  who.hidden = false;
  who.textContent = session.email || "";
}

function showSignedOut() {
  clearJobs();
  clearBatches();
  $("#app-view").hidden = true;
  $("#auth-view").hidden = false;
  $("#logout").hidden = true;
  $("#whoami").hidden = true;
}

function authError(message) {
  const box = $("#auth-error");
  box.textContent = message;
  box.hidden = !message;
}

function fieldMessages(error) {
  if (!error.errors) return error.message;
  const parts = Object.entries(error.errors).map(([field, messages]) => {
    const text = Array.isArray(messages) ? messages.join(" ") : String(messages);
    return `${field === "email" ? "E-mail" : field === "password" ? "Password" : field}: ${text}`;
  });
  return parts.join(" ");
}

async function onAuthSubmit(event) {
  event.preventDefault();
  const action = (event.submitter && event.submitter.dataset.action) || "login";
  const form = event.currentTarget;
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  authError("");
  if (!email || !password) {
    authError("Enter your e-mail and password.");
    (email ? form.elements.password : form.elements.email).focus();
    return;
  }
  for (const button of form.querySelectorAll("button")) button.disabled = true;
  try {
    if (action === "register") await register(email, password);
    await login(email, password);
    form.reset();
    announce(action === "register" ? "Account created; you are logged in." : "Logged in.");
    $("#new-job-title").setAttribute("tabindex", "-1");
    $("#new-job-title").focus();
  } catch (error) {
    const message =
      error instanceof ApiError && error.status === 409
        ? "This e-mail is already registered: log in instead."
        : fieldMessages(error);
    authError(message);
    form.elements.email.focus();
  } finally {
    for (const button of form.querySelectorAll("button")) button.disabled = false;
  }
}

let started = false;
let leaving = false; // the user clicked "Log out" (no "session ended" message then)

function start(session) {
  if (!session) {
    started = false;
    showSignedOut();
    return;
  }
  showSignedIn(session);
  if (started) return;
  started = true;
  loadModels();
  loadJobs();
  loadBatches();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#auth-form").addEventListener("submit", onAuthSubmit);
  $("#logout").addEventListener("click", async () => {
    leaving = true;
    await logout();
    leaving = false;
    announce("Logged out.");
    $("#auth-email").focus();
  });
  initForm();
  initJobs({ regenerate });
  initBatches();
  onSessionChange((session) => {
    if (!session && started && !leaving) authError("Your session has ended: please log in again.");
    start(session);
  });
  start(currentSession());
});
