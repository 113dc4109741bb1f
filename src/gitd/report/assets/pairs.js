// Counts the pair cards into the page (the browser test reads it) and filters them by text.
(function () {
  var cards = document.querySelectorAll('.pair');
  var out = document.getElementById('rendered-count');
  if (out) { out.textContent = String(cards.length); }
  document.body.setAttribute('data-rendered-pairs', String(cards.length));
  var filter = document.getElementById('filter');
  if (filter) {
    filter.addEventListener('input', function () {
      var q = filter.value.toLowerCase();
      var shown = 0;
      cards.forEach(function (card) {
        var hit = !q || card.textContent.toLowerCase().indexOf(q) >= 0;
        card.hidden = !hit;
        if (hit) { shown += 1; }
      });
      if (out) { out.textContent = String(shown); }
    });
  }
})();
