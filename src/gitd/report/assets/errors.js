// Installed first, in <head>, so that an error anywhere later on the page is shown in the page
// (and seen by the browser test) instead of only in a console nobody opens.
window.onerror = function (msg, src, line) {
  var box = document.getElementById('js-errors');
  var text = 'script error: ' + msg + ' (line ' + line + ')';
  if (box) { box.hidden = false; box.textContent += text + '\n'; }
  document.documentElement.setAttribute('data-js-errors', 'yes');
};
