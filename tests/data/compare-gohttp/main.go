// A standard-library-only HTTP server, big enough (about 10 MB) to measure compare on real-sized Go binaries.
package main

import (
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"expvar"
	"html/template"
	"log"
	"net/http"
	_ "net/http/pprof"
	"net/rpc"
	"net/smtp"
	"os"
	"text/tabwriter"
)

var page = template.Must(template.New("page").Parse(`<p>{{.}}</p>`))

func main() {
	hits := expvar.NewInt("hits")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_ = page.Execute(w, r.URL.Path)
	})
	http.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"drivers": sql.Drivers(), "tls": tls.VersionName(tls.VersionTLS13)})
	})
	_ = rpc.Register(new(Arith))
	tw := tabwriter.NewWriter(os.Stderr, 0, 8, 1, ' ', 0)
	_, _ = tw.Write([]byte("listening\t:8080\n"))
	_ = tw.Flush()
	if len(os.Args) > 1 && os.Args[1] == "mail" {
		_ = smtp.SendMail("localhost:25", nil, "a@example.com", []string{"b@example.com"}, nil)
	}
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		log.Fatal(http.ListenAndServe(":8080", nil))
	}
}

// Arith is an RPC service.
type Arith int

// Add adds.
func (t *Arith) Add(args [2]int, reply *int) error {
	*reply = args[0] + args[1]
	return nil
}
