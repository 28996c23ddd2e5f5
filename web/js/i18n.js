// Korean and English: from the browser's language, switchable, remembered.

const LANG_KEY = "cmschat.lang";

const MESSAGES = {
  en: {
    appName: "cmschat", signIn: "Sign in", username: "Username", password: "Password",
    signOut: "Sign out", changePassword: "Choose a new password",
    changePasswordHint: "Your password was set by an administrator: choose your own to go on.",
    changePasswordFirstStart: "cmschat generated this password when it first started: choose your own to go on.",
    passwordRules: "At least {min} characters (at most {max}), with at least {distinct} different characters; it must not contain the username or be a common password.",
    currentPassword: "Current password", newPassword: "New password", save: "Save",
    rooms: "Rooms", newRoom: "New room", direct: "Direct", group: "Group", channel: "Channel",
    roomName: "Room name", members: "Members (usernames, comma-separated)", create: "Create",
    cancel: "Cancel", send: "Send", writeMessage: "Write a message… (/ for canned replies)",
    attach: "Attach a file", attachShort: "File", edit: "Edit", delete: "Delete", reply: "Reply",
    replyingTo: "Replying to", edited: "edited", deleted: "This message was deleted.",
    search: "Search messages", searchResults: "Search results", noResults: "No messages found.",
    typing: "{names} is typing…", online: "online", offline: "offline",
    connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…",
    loadOlder: "Loading older messages…", download: "Download", noRoom: "Pick a room.",
    noRoomsYet: "You are in no conversation yet.",
    noRoomsHint: "Start one with a colleague or a group, or join a public channel.",
    startConversation: "Start a conversation", browseChannels: "Browse channels",
    noRoomToSend: "Open a room to write a message",
    confirmDelete: "Really delete?", uploadFailed: "Upload failed: {reason}",
    channels: "Channels", join: "Join", noChannels: "No public channels yet.",
    console: "Console", language: "Language", unread: "{n} unread",
    dashboard: "Dashboard", users: "Users", moderation: "Moderation", notices: "Notices",
    cannedReplies: "Canned replies", retention: "Retention", audit: "Audit log",
    backups: "Backups", monitoring: "Monitoring", comingSoon: "Arrives with its own release.",
    adminsOnly: "The console is for administrators.", backToChat: "Back to chat",
    sendingTooFast: "You are sending too fast. Wait {seconds} s, then send again.",
    messageTooLong: "This message is too long to send. Shorten it, or attach it as a file.",
    err_bad_credentials: "Wrong username or password.",
    err_wrong_password: "The current password is wrong.",
    err_weak_password: "This password does not meet the rules.",
    err_rate_limited: "Too many attempts. Try again in a moment.",
    err_rate_limited_wait: "Too many attempts. Try again in {minutes} min.",
    err_forbidden: "You are not allowed to do this.",
    err_admin_required: "Administrators only.",
    err_not_found: "It no longer exists; reload the page.",
    err_weak_password_short: "The password is too short.",
    err_weak_password_long: "The password is too long.",
    err_weak_password_username: "The password must not contain the username.",
    err_weak_password_common: "This password is too common or too simple; choose another.",
    err_invalid: "Check “{field}”: {detail}",
    err_network: "The server cannot be reached. Check the connection and try again.",
  },
  ko: {
    appName: "cmschat", signIn: "로그인", username: "사용자 이름", password: "비밀번호",
    signOut: "로그아웃", changePassword: "새 비밀번호 설정",
    changePasswordHint: "관리자가 정한 비밀번호입니다. 계속하려면 새 비밀번호를 정하세요.",
    changePasswordFirstStart: "cmschat이 처음 시작할 때 만든 비밀번호입니다. 계속하려면 새 비밀번호를 정하세요.",
    passwordRules: "{min}자 이상 {max}자 이하, 서로 다른 문자 {distinct}개 이상이어야 하며 사용자 이름을 포함하거나 흔한 비밀번호여서는 안 됩니다.",
    currentPassword: "현재 비밀번호", newPassword: "새 비밀번호", save: "저장",
    rooms: "대화방", newRoom: "새 대화방", direct: "1:1", group: "그룹", channel: "채널",
    roomName: "대화방 이름", members: "멤버 (사용자 이름, 쉼표로 구분)", create: "만들기",
    cancel: "취소", send: "보내기", writeMessage: "메시지 입력… (/ 상용구)",
    attach: "파일 첨부", attachShort: "파일", edit: "수정", delete: "삭제", reply: "답장",
    replyingTo: "답장 대상", edited: "수정됨", deleted: "삭제된 메시지입니다.",
    search: "메시지 검색", searchResults: "검색 결과", noResults: "메시지가 없습니다.",
    typing: "{names} 님이 입력 중…", online: "온라인", offline: "오프라인",
    connecting: "연결 중…", connected: "연결됨", reconnecting: "다시 연결하는 중…",
    loadOlder: "이전 메시지를 불러오는 중…", download: "내려받기", noRoom: "대화방을 고르세요.",
    noRoomsYet: "아직 참여한 대화가 없습니다.",
    noRoomsHint: "동료나 그룹과 대화를 시작하거나 공개 채널에 참여하세요.",
    startConversation: "대화 시작하기", browseChannels: "채널 둘러보기",
    noRoomToSend: "메시지를 쓰려면 대화방을 여세요",
    confirmDelete: "정말 삭제할까요?", uploadFailed: "업로드 실패: {reason}",
    channels: "채널", join: "참여", noChannels: "공개 채널이 아직 없습니다.",
    console: "관리 콘솔", language: "언어", unread: "읽지 않음 {n}",
    dashboard: "대시보드", users: "사용자", moderation: "메시지 관리", notices: "공지",
    cannedReplies: "상용구", retention: "보존 정책", audit: "감사 로그",
    backups: "백업", monitoring: "모니터링", comingSoon: "다음 릴리스에서 제공됩니다.",
    adminsOnly: "관리 콘솔은 관리자만 쓸 수 있습니다.", backToChat: "채팅으로",
    sendingTooFast: "너무 빨리 보내고 있습니다. {seconds}초 뒤에 다시 보내세요.",
    messageTooLong: "메시지가 너무 길어 보낼 수 없습니다. 줄이거나 파일로 첨부하세요.",
    err_bad_credentials: "사용자 이름 또는 비밀번호가 틀렸습니다.",
    err_wrong_password: "현재 비밀번호가 틀렸습니다.",
    err_weak_password: "비밀번호가 규칙에 맞지 않습니다.",
    err_rate_limited: "시도가 너무 많습니다. 잠시 뒤에 다시 시도하세요.",
    err_rate_limited_wait: "시도가 너무 많습니다. {minutes}분 뒤에 다시 시도하세요.",
    err_forbidden: "이 작업을 할 권한이 없습니다.",
    err_admin_required: "관리자만 할 수 있습니다.",
    err_not_found: "이미 없어졌습니다. 페이지를 새로 고치세요.",
    err_weak_password_short: "비밀번호가 너무 짧습니다.",
    err_weak_password_long: "비밀번호가 너무 깁니다.",
    err_weak_password_username: "비밀번호에 사용자 이름이 들어 있으면 안 됩니다.",
    err_weak_password_common: "너무 흔하거나 단순한 비밀번호입니다. 다른 비밀번호를 고르세요.",
    err_invalid: "“{field}” 값을 확인하세요: {detail}",
    err_network: "서버에 연결할 수 없습니다. 연결을 확인하고 다시 시도하세요.",
  },
};

export const LANGUAGES = { ko: "한국어", en: "English" };

export let lang = localStorage.getItem(LANG_KEY)
  || (navigator.language || "en").slice(0, 2).toLowerCase();
if (!MESSAGES[lang]) lang = "en";
document.documentElement.lang = lang;

export function t(key, values = {}) {
  const text = MESSAGES[lang][key] ?? MESSAGES.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

export function setLanguage(next) {
  localStorage.setItem(LANG_KEY, next);
  window.location.reload();
}

// A server error in the reader's language: the error code's text when there is one
// (``err_<code>``), else the server's own message (English, but specific).
const WEAK_RULES = [[/at least/, "short"], [/at most/, "long"], [/username/, "username"], [/common/, "common"]];

function known(key) { return MESSAGES[lang][key] !== undefined || MESSAGES.en[key] !== undefined; }

export function errorText(error) {
  if (!error) return "";
  if (error.status === 0) return t("err_network");
  if (error.code === "weak_password") {
    // One code for every rule; the server's English message says which one.
    const rule = WEAK_RULES.find(([pattern]) => pattern.test(error.message || ""));
    return t(rule ? "err_weak_password_" + rule[1] : "err_weak_password");
  }
  if (error.code === "rate_limited" && error.retryAfter) {
    return t("err_rate_limited_wait", { minutes: Math.max(1, Math.ceil(error.retryAfter / 60)) });
  }
  if (error.code === "invalid" && error.field) {
    const label = known("field_" + error.field) ? t("field_" + error.field) : error.field;
    return t("err_invalid", { field: label, detail: error.message || "" });
  }
  if (error.code && known("err_" + error.code)) return t("err_" + error.code);
  return error.message || String(error);
}

// A feature module adds its own texts ({en: {...}, ko: {...}}) when it loads.
export function extendMessages(extra) {
  for (const [language, texts] of Object.entries(extra)) {
    MESSAGES[language] = { ...(MESSAGES[language] || {}), ...texts };
  }
}
