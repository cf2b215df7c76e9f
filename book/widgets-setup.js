// Glue that lets ipywidgets run in the static, offline book.
// Jupyter Book loads it (nb_ipywidgets_js in _config.yml) on pages with widgets,
// after requirejs/require.js and before ipywidgets/embed-amd.js, which draws the
// widgets when the page has loaded. scripts/vendor_js.sh copies it to
// _static/ipywidgets/, next to embed-amd.js.
(function () {
  "use strict";
  var dir = document.currentScript.src.replace(/\/[^/]*$/, "");  // .../_static/ipywidgets

  // 1) embed-amd.js finds its icon font through AMD module ids, which RequireJS
  //    would resolve against the page URL (a 404 on nested pages). Pin them here.
  require.config({
    paths: {
      "@jupyter-widgets": dir,
      "@jupyter-widgets/html-manager/dist": dir,
    },
  });

  // 2) Widget labels such as \(t\) are typeset through MathJax 2's
  //    MathJax.Hub.Queue; the book ships MathJax 3. Give every MathJax object
  //    that appears on window a Hub whose Queue waits for MathJax 3 to start,
  //    then typesets the label with typesetPromise.
  var mathjaxLoaded = new Promise(function (resolve) {
    var hub = {
      Queue: function (job) {
        var element = job[2];  // job = ["Typeset", MathJax.Hub, element]
        mathjaxLoaded
          .then(function (mathjax) {
            return mathjax.startup.promise.then(function () {
              return mathjax.typesetPromise([element]);
            });
          })
          .catch(function (err) { console.warn("MathJax failed on a widget label:", err); });
      },
    };
    var previous = window.MathJax;  // Sphinx's MathJax config, if any
    var current;
    // MathJax 3 replaces window.MathJax (the config) with itself when it loads.
    Object.defineProperty(window, "MathJax", {
      configurable: true,
      get: function () { return current; },
      set: function (value) {
        current = value;
        if (value && typeof value === "object") {
          if (!value.Hub) value.Hub = hub;
          if (value.version) resolve(value);
        }
      },
    });
    window.MathJax = previous || {};
  });

  document.addEventListener("DOMContentLoaded", function () {
    // 3) Sphinx loads MathJax only on pages with math in the text, but a
    //    widget label may need it on any page: load it here if it is missing.
    if (!document.querySelector('script[src*="mathjax/tex-chtml.js"]')) {
      var config = window.MathJax;
      config.startup = Object.assign({ typeset: false }, config.startup);
      var script = document.createElement("script");
      script.src = dir + "/../mathjax/tex-chtml.js";
      document.head.appendChild(script);
    }

    // 4) sphinx-book-theme's Font Awesome script swaps the Play button's <i> for
    //    an <svg>. PlayView.updatePlaying expects the <i>, throws, and the error
    //    also breaks the slider -> image link. Hand it a new <i> when it is gone.
    require(["@jupyter-widgets/controls"], function (controls) {
      var view = controls.PlayView.prototype;
      var updatePlaying = view.updatePlaying;
      view.updatePlaying = function () {
        var button = this.playPauseButton;
        if (button && button.getElementsByTagName("i").length === 0) {
          var icon = this.model.get("playing") ? "pause" : "play";
          var svg = button.querySelector("svg");
          if (svg && svg.getAttribute("data-icon") === icon) return;
          button.replaceChildren(document.createElement("i"));
        }
        return updatePlaying.apply(this, arguments);
      };
    });
  });
})();
