/* rsseg swipe: compare two Leaflet panes side by side (rsseg's own, MIT like rsseg).
 * rssegSwipe(map, leftPane, rightPane, value) puts a divider with a range slider across the map;
 * the left pane is clipped to the part of the map left of the divider, the right pane to the rest.
 * Panes live inside the moving map pane, so the clip is recomputed in layer coordinates on every move.
 */
(function () {
  var CSS = '.rsseg-swipe{position:absolute;inset:0;pointer-events:none;z-index:450}' +
    '.rsseg-swipe-divider{position:absolute;top:0;bottom:0;width:4px;margin-left:-2px;background:#fff;' +
    'box-shadow:0 0 4px rgba(0,0,0,.6)}' +
    '.rsseg-swipe-range{position:absolute;top:50%;left:0;width:100%;margin:0;-webkit-appearance:none;appearance:none;' +
    'background:transparent;pointer-events:none;height:0}' +
    '.rsseg-swipe-range::-webkit-slider-thumb{-webkit-appearance:none;pointer-events:auto;width:28px;height:28px;' +
    'border-radius:50%;background:#fff;border:2px solid #333;cursor:ew-resize}' +
    '.rsseg-swipe-range::-moz-range-thumb{pointer-events:auto;width:28px;height:28px;border-radius:50%;background:#fff;' +
    'border:2px solid #333;cursor:ew-resize}';

  window.rssegSwipe = function (map, leftPane, rightPane, value) {
    if (!document.getElementById('rsseg-swipe-css')) {
      var style = document.createElement('style');
      style.id = 'rsseg-swipe-css';
      style.textContent = CSS;
      document.head.appendChild(style);
    }
    var wrap = L.DomUtil.create('div', 'rsseg-swipe', map.getContainer());
    var divider = L.DomUtil.create('div', 'rsseg-swipe-divider', wrap);
    var range = L.DomUtil.create('input', 'rsseg-swipe-range', wrap);
    range.type = 'range'; range.min = 0; range.max = 1; range.step = 'any'; range.value = value;
    range.title = 'Drag to compare';
    // dragging the thumb must not pan the map
    L.DomEvent.on(range, 'mousedown touchstart pointerdown', function (e) { L.DomEvent.stopPropagation(e); map.dragging.disable(); });
    L.DomEvent.on(document, 'mouseup touchend pointerup', function () { map.dragging.enable(); });

    function update() {
      var size = map.getSize();
      var x = size.x * Number(range.value);
      var nw = map.containerPointToLayerPoint([0, 0]);
      var se = map.containerPointToLayerPoint(size);
      var cut = nw.x + x;
      divider.style.left = x + 'px';
      var left = map.getPane(leftPane), right = map.getPane(rightPane);
      if (left) left.style.clip = 'rect(' + [nw.y, cut, se.y, nw.x].join('px,') + 'px)';
      if (right) right.style.clip = 'rect(' + [nw.y, se.x, se.y, cut].join('px,') + 'px)';
    }
    L.DomEvent.on(range, 'input change', update);
    map.on('move resize zoomend', update);
    update();
    return {range: range, update: update};
  };
})();
