// mlnode: one hashicorp/memberlist node for the memberlist-wire tests and the mixed benchmark,
// built against the Debian-packaged library (golang-github-hashicorp-memberlist-dev 0.2.2,
// GOPATH mode: GO111MODULE=off GOPATH=/usr/share/gocode, no module download).
//
// Beyond the driver contract below it takes --key (base64 AES key), --meta (node metadata
// bytes), --no-compress, and commands on stdin, one JSON object a line:
//
//	{"cmd": "send", "to": NAME, "payload": TEXT, "reliable": BOOL}   a user message
//	{"cmd": "leave"}                                                 graceful leave, then exit 0
//
// and prints {"ev": "msg", "payload": TEXT} for every user message it receives, and
// {"ev": "meta", "node": N, "meta": BASE64} when a member joins.
//
// It follows the driver contract in ../README.md:
//
//	memberlist-driver --name NAME --bind 127.0.0.1:PORT [--join 127.0.0.1:SEEDPORT]
//	    [--probe-interval-ms 1000] [--probe-timeout-ms 500] [--gossip-interval-ms 200]
//
// and prints JSON lines on stdout, one write each (Go's os.Stdout is unbuffered):
//
//	{"ts": <unix s>, "ev": "ready"}                        listening, and joined if --join
//	{"ts": ..., "ev": "view", "alive": [...]}              every 250 ms: Members(), sorted
//	{"ts": ..., "ev": "state", "node": N, "state": S}      on events the library exposes
//
// Members() is every node not dead or left, so a suspect node still counts as alive, as the
// contract says. memberlist exposes join and leave through its EventDelegate: NotifyJoin gives
// "alive"; NotifyLeave gives "dead" (memberlist 0.2.2 calls it for a crash and for a graceful
// leave alike and does not say which). It has no suspect event, so the driver reads its own
// log for "Suspect X has failed" and emits "suspect" with "via": "local-probe": that covers
// only suspicions this node raised by probing, not those it heard by gossip.
//
// SIGTERM or SIGINT: Leave (bounded) then Shutdown, exit 0. The loop is bounded by
// --max-runtime-s, and the process also ends when stdout is closed (SIGPIPE on write).
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

var outMu sync.Mutex

// emit writes one JSON object as one line on stdout, with "ts" added.
func emit(v map[string]interface{}) {
	v["ts"] = float64(time.Now().UnixNano()) / 1e9
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func emitState(node, state string, extra map[string]interface{}) {
	v := map[string]interface{}{"ev": "state", "node": node, "state": state}
	for k, x := range extra {
		v[k] = x
	}
	emit(v)
}

// events turns memberlist's EventDelegate callbacks into "state" lines.
type events struct{}

func (events) NotifyJoin(n *memberlist.Node) {
	emitState(n.Name, "alive", map[string]interface{}{"meta": base64.StdEncoding.EncodeToString(n.Meta)})
}
func (events) NotifyLeave(n *memberlist.Node)  { emitState(n.Name, "dead", nil) }
func (events) NotifyUpdate(n *memberlist.Node) {
	emitState(n.Name, "update", map[string]interface{}{"meta": base64.StdEncoding.EncodeToString(n.Meta)})
}

// delegate carries user messages and our metadata.
type delegate struct{ meta []byte }

func (d *delegate) NodeMeta(limit int) []byte { return d.meta }
func (d *delegate) NotifyMsg(b []byte) {
	emit(map[string]interface{}{"ev": "msg", "payload": string(b)})
}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                 { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)       {}

type command struct {
	Cmd      string `json:"cmd"`
	To       string `json:"to"`
	Payload  string `json:"payload"`
	Reliable bool   `json:"reliable"`
}

// logTap receives memberlist's log lines; it turns local suspicions into "suspect" lines and
// copies everything to stderr when asked to.
type logTap struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	forward io.Writer
}

var suspectRe = regexp.MustCompile(`memberlist: Suspect (\S+) has failed`)

func (t *logTap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.forward != nil {
		t.forward.Write(p)
	}
	t.buf.Write(p)
	for {
		line, err := t.buf.ReadString('\n')
		if err != nil { // no full line yet: keep the rest for the next write
			t.buf.Reset()
			t.buf.WriteString(line)
			break
		}
		if m := suspectRe.FindStringSubmatch(line); m != nil {
			emitState(m[1], "suspect", map[string]interface{}{"via": "local-probe"})
		}
	}
	return len(p), nil
}

func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", s)
	}
	return h, port, nil
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "memberlist-driver: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	name := flag.String("name", "", "node name (required)")
	bind := flag.String("bind", "", "host:port to listen on, UDP and TCP (required)")
	join := flag.String("join", "", "seed host:port to join; a comma-separated list is accepted")
	probe := flag.Int("probe-interval-ms", 1000, "memberlist ProbeInterval")
	probeTimeout := flag.Int("probe-timeout-ms", 500, "memberlist ProbeTimeout")
	gossip := flag.Int("gossip-interval-ms", 200, "memberlist GossipInterval")
	joinWait := flag.Int("join-timeout-ms", 15000, "how long to keep retrying the join")
	leaveWait := flag.Int("leave-timeout-ms", 5000, "how long Leave may wait for its broadcast on SIGTERM")
	maxRuntime := flag.Int("max-runtime-s", 3600, "exit after this many seconds whatever happens")
	logStderr := flag.Bool("log-stderr", false, "copy memberlist's log to stderr")
	key := flag.String("key", "", "base64 AES key (16, 24 or 32 bytes)")
	meta := flag.String("meta", "", "node metadata")
	noCompress := flag.Bool("no-compress", false, "do not compress")
	flag.Parse()
	if *name == "" || *bind == "" {
		fail("--name and --bind are required")
	}
	host, port, err := splitHostPort(*bind)
	if err != nil {
		fail("--bind: %v", err)
	}

	// Everything not named here keeps memberlist's LAN defaults (SuspicionMult 4,
	// SuspicionMaxTimeoutMult 6, RetransmitMult 4, GossipNodes 3, PushPullInterval 30 s,
	// IndirectChecks 3, AwarenessMaxMultiplier 8).
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = *name
	cfg.BindAddr, cfg.BindPort = host, port
	cfg.AdvertiseAddr, cfg.AdvertisePort = host, port
	cfg.ProbeInterval = time.Duration(*probe) * time.Millisecond
	cfg.ProbeTimeout = time.Duration(*probeTimeout) * time.Millisecond
	cfg.GossipInterval = time.Duration(*gossip) * time.Millisecond
	cfg.Events = events{}
	cfg.Delegate = &delegate{meta: []byte(*meta)}
	cfg.EnableCompression = !*noCompress
	if *key != "" {
		k, err := base64.StdEncoding.DecodeString(*key)
		if err != nil {
			fail("--key: %v", err)
		}
		cfg.SecretKey = k
	}
	tap := &logTap{}
	if *logStderr {
		tap.forward = os.Stderr
	}
	cfg.LogOutput = tap

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	deadline := time.After(time.Duration(*maxRuntime) * time.Second)

	m, err := memberlist.Create(cfg)
	if err != nil {
		fail("create: %v", err)
	}
	if *join != "" {
		seeds := strings.Split(*join, ",")
		giveUp := time.Now().Add(time.Duration(*joinWait) * time.Millisecond)
		for {
			_, err := m.Join(seeds)
			if err == nil {
				break
			}
			if time.Now().After(giveUp) {
				m.Shutdown()
				fail("join %v: %v", seeds, err)
			}
			select {
			case <-sig:
				m.Shutdown()
				os.Exit(0)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	emit(map[string]interface{}{"ev": "ready"})

	cmds := make(chan command, 16)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			var c command
			if json.Unmarshal(sc.Bytes(), &c) == nil {
				cmds <- c
			}
		}
	}()

	view := func() {
		members := m.Members()
		names := make([]string, 0, len(members))
		for _, n := range members {
			names = append(names, n.Name)
		}
		sort.Strings(names)
		emit(map[string]interface{}{"ev": "view", "alive": names})
	}
	view()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-sig:
			m.Leave(time.Duration(*leaveWait) * time.Millisecond)
			m.Shutdown()
			os.Exit(0)
		case <-deadline:
			fmt.Fprintln(os.Stderr, "memberlist-driver: --max-runtime-s reached")
			m.Shutdown()
			os.Exit(3)
		case <-tick.C:
			view()
		case c := <-cmds:
			switch c.Cmd {
			case "leave":
				m.Leave(time.Duration(*leaveWait) * time.Millisecond)
				m.Shutdown()
				os.Exit(0)
			case "send":
				for _, n := range m.Members() {
					if n.Name != c.To {
						continue
					}
					var err error
					if c.Reliable {
						err = m.SendReliable(n, []byte(c.Payload))
					} else {
						err = m.SendBestEffort(n, []byte(c.Payload))
					}
					if err != nil {
						fmt.Fprintf(os.Stderr, "mlnode: send: %v\n", err)
					}
				}
			}
		}
	}
}
