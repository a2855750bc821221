// A multi-lang bolt in Java with no library: counts words (fields grouping sends each word to
// one task) and emits the running count, anchored to the word's tuple. Build: javac WordCount.java
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.util.*;

public class WordCount {
    private static final BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    private static final PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), false,
        StandardCharsets.UTF_8);

    public static void main(String[] args) throws IOException {
        Map<String, Object> setup = read();
        long pid = ProcessHandle.current().pid();
        Files.createFile(Paths.get((String) setup.get("pidDir"), Long.toString(pid)));
        send("{\"pid\":" + pid + "}");
        Map<String, Long> counts = new HashMap<>();
        Map<String, Object> tuple;
        while ((tuple = read()) != null) {
            String id = (String) tuple.get("id");
            if ("__heartbeat".equals(tuple.get("stream"))) {
                send("{\"command\":\"sync\"}");
                continue;
            }
            if ("__tick".equals(tuple.get("stream"))) {
                continue;
            }
            String word = (String) ((List<?>) tuple.get("tuple")).get(0);
            long count = counts.merge(word, 1L, Long::sum);
            send("{\"command\":\"emit\",\"anchors\":[" + quote(id) + "],\"tuple\":[" + quote(word) + "," + count
                 + "],\"need_task_ids\":false}");
            send("{\"command\":\"ack\",\"id\":" + quote(id) + "}");
        }
    }

    // One message: the lines up to a line "end"; null at the end of input.
    @SuppressWarnings("unchecked")
    static Map<String, Object> read() throws IOException {
        StringBuilder text = new StringBuilder();
        String line;
        while ((line = in.readLine()) != null && !line.equals("end")) {
            text.append(line).append('\n');
        }
        if (line == null) {
            return null;
        }
        return (Map<String, Object>) new Json(text.toString()).value();
    }

    static void send(String json) {
        out.print(json);
        out.print("\nend\n");
        out.flush();
    }

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    // Just enough JSON: objects, arrays, strings, numbers, true, false, null.
    static final class Json {
        private final String s;
        private int i;

        Json(String s) { this.s = s; }

        Object value() {
            skip();
            char c = s.charAt(i);
            if (c == '{') return object();
            if (c == '[') return array();
            if (c == '"') return string();
            if (s.startsWith("true", i)) { i += 4; return Boolean.TRUE; }
            if (s.startsWith("false", i)) { i += 5; return Boolean.FALSE; }
            if (s.startsWith("null", i)) { i += 4; return null; }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
            String n = s.substring(start, i);
            return n.matches("-?\\d+") ? (Object) Long.valueOf(n) : (Object) Double.valueOf(n);
        }

        private Map<String, Object> object() {
            Map<String, Object> m = new LinkedHashMap<>();
            i++;
            skip();
            if (s.charAt(i) == '}') { i++; return m; }
            while (true) {
                skip();
                String key = string();
                skip();
                i++;  // ':'
                m.put(key, value());
                skip();
                if (s.charAt(i++) == '}') return m;  // else ','
            }
        }

        private List<Object> array() {
            List<Object> a = new ArrayList<>();
            i++;
            skip();
            if (s.charAt(i) == ']') { i++; return a; }
            while (true) {
                a.add(value());
                skip();
                if (s.charAt(i++) == ']') return a;  // else ','
            }
        }

        private String string() {
            StringBuilder b = new StringBuilder();
            i++;  // '"'
            while (true) {
                char c = s.charAt(i++);
                if (c == '"') return b.toString();
                if (c != '\\') { b.append(c); continue; }
                char e = s.charAt(i++);
                switch (e) {
                    case 'n': b.append('\n'); break;
                    case 't': b.append('\t'); break;
                    case 'r': b.append('\r'); break;
                    case 'b': b.append('\b'); break;
                    case 'f': b.append('\f'); break;
                    case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                    default: b.append(e);
                }
            }
        }

        private void skip() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++;
        }
    }
}
