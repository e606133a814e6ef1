// Command host serves greetings through Go plugins it loads at run time, and swaps to a newer plugin
// without restarting.
//
//	host load PLUGIN...          open each plugin in order in this one process; one JSON line per plugin
//	host serve -dir DIR -addr A  load every *.so in DIR (in name order), serve GET /greet?name=N with the
//	                             newest one, and keep watching DIR: a new file is loaded and takes over
//	                             (write it under another name, then rename it to *.so)
//
// Go cannot unload a plugin: a new release is a new file (and a new package path), loaded beside the old.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"plugin"
	"sort"
	"sync"
	"time"

	"github.com/pkg/errors"

	"example.com/reprobuild/go-plugin-host/api"
)

// Result is what the host reports about one plugin file.
type Result struct {
	File     string `json:"file"`
	OK       bool   `json:"ok"`
	Error    string `json:"error,omitempty"`
	Version  string `json:"version,omitempty"`
	Greeting string `json:"greeting,omitempty"`
}

func open(path string) (api.Greeter, error) {
	p, err := plugin.Open(path)
	if err != nil {
		return nil, err
	}
	sym, err := p.Lookup("New")
	if err != nil {
		return nil, err
	}
	factory, ok := sym.(func() api.Greeter)
	if !ok {
		return nil, errors.Errorf("%s: New is a %T, not a func() api.Greeter", path, sym)
	}
	return factory(), nil
}

func load(path string) (Result, api.Greeter) {
	res := Result{File: path}
	g, err := open(path)
	if err != nil {
		res.Error = err.Error()
		return res, nil
	}
	res.OK, res.Version = true, g.Version()
	greeting, err := g.Greet("loader")
	if err != nil {
		res.Error = errors.Wrap(err, "greet").Error()
	}
	res.Greeting = greeting
	return res, g
}

// registry holds the loaded plugins; the active one answers requests.
type registry struct {
	mu     sync.Mutex
	seen   map[string]Result
	stamps map[string]string // size and mtime of a file that failed: tried again once it changes
	active api.Greeter
}

func (r *registry) scan(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.so"))
	sort.Strings(files)
	for _, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			continue
		}
		stamp := fmt.Sprintf("%d %d", info.Size(), info.ModTime().UnixNano())
		r.mu.Lock()
		res, done := r.seen[f]
		retry := done && !res.OK && r.stamps[f] != stamp // e.g. caught half-copied: deploy by rename
		r.mu.Unlock()
		if done && !retry {
			continue
		}
		res, g := load(f)
		r.mu.Lock()
		r.seen[f], r.stamps[f] = res, stamp
		if g != nil {
			r.active = g
		}
		r.mu.Unlock()
		line, _ := json.Marshal(res)
		fmt.Fprintln(os.Stderr, string(line))
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	dir := fs.String("dir", "plugins", "directory of plugin files (*.so)")
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	poll := fs.Duration("poll", 200*time.Millisecond, "how often to look for new plugin files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reg := &registry{seen: map[string]Result{}, stamps: map[string]string{}}
	reg.scan(*dir)
	go func() {
		for range time.Tick(*poll) {
			reg.scan(*dir)
		}
	}()
	http.HandleFunc("/greet", func(w http.ResponseWriter, req *http.Request) {
		reg.mu.Lock()
		g := reg.active
		reg.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if g == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "no plugin loaded", "pid": os.Getpid()})
			return
		}
		greeting, err := g.Greet(req.URL.Query().Get("name"))
		out := map[string]any{"version": g.Version(), "greeting": greeting, "pid": os.Getpid()}
		if err != nil {
			out["error"] = err.Error()
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	http.HandleFunc("/plugins", func(w http.ResponseWriter, req *http.Request) {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		_ = json.NewEncoder(w).Encode(reg.seen)
	})
	fmt.Fprintf(os.Stderr, "serving on %s (limits: %s)\n", *addr, api.Limits())
	return http.ListenAndServe(*addr, nil)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: host load PLUGIN... | host serve -dir DIR -addr ADDR")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "load":
		failed := false
		for _, f := range os.Args[2:] {
			res, _ := load(f)
			failed = failed || !res.OK
			line, _ := json.Marshal(res)
			fmt.Println(string(line))
		}
		if failed {
			os.Exit(1)
		}
	case "serve":
		if err := serve(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
