import { render } from "preact";
import { learnNodes } from "./api";
import { App } from "./app";
import "./style.css";

// Meanwhile the page uses its own origin (and what it published before).
void learnNodes();

render(<App />, document.getElementById("app")!);
